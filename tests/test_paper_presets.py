"""Presets beyond the paper's table (the sparse comparison, the bf16 table), their grouping by figure, the
`mot presets` listing, and the offline refusal of the paper's data source."""

from __future__ import annotations

import pytest

from mixture_of_tokens.cli import main
from mixture_of_tokens.data import streaming
from mixture_of_tokens.presets import PRESETS, get_preset, presets_by_figure

# name -> (ffn kind, experts, expert width, group size, steps, lr, precision)
SPARSE_AND_BF16 = {
    "sparse-mot-medium-32e-16": ("mot", 512, 128, 32, 100_000, 7e-4, "auto"),
    "token-choice-medium": ("token_choice", 32, 2048, 32, 100_000, 7e-4, "auto"),
    "expert-choice-medium": ("expert_choice", 32, 2048, 32, 100_000, 7e-4, "auto"),
    "mot-medium-32e-bf16-mixed": ("mot", 32, 2048, 32, 150_000, 7e-4, "bf16-mixed"),
    "mot-medium-32e-bf16-only": ("mot", 32, 2048, 32, 150_000, 7e-4, "bf16-pure"),
    "expert-choice-medium-32e-bf16-mixed": ("expert_choice", 32, 2048, 32, 150_000, 7e-4, "bf16-mixed"),
    "expert-choice-medium-32e-bf16-only": ("expert_choice", 32, 2048, 32, 150_000, 7e-4, "bf16-pure"),
}


@pytest.mark.parametrize("name", sorted(SPARSE_AND_BF16))
def test_sparse_and_precision_presets(name):
    kind, n_experts, width, group, steps, lr, precision = SPARSE_AND_BF16[name]
    preset = get_preset(name)
    model, train = preset.model, preset.train
    assert (model.ffn, model.n_experts, model.expert_size, model.group_size) == (kind, n_experts, width, group)
    assert (model.d_model, model.n_blocks, model.d_ff) == (512, 8, 2048)
    assert model.block_ffn_kinds() == ["dense"] * 4 + [kind] * 4
    assert (train.steps, train.lr, train.precision, train.batch_size) == (steps, lr, precision, 256)
    assert (train.data, train.tokenizer) == ("c4", "gpt2")
    if kind == "token_choice":  # top-1 over experts of width d_ff: dense FLOPs
        assert (model.tc_top_k, model.tc_capacity_factor, model.tc_load_balance_weight) == (1, 1.25, 0.01)
    assert model.load_balance_reduce == "mean"  # the paper-era authors' code averages it over layers
    assert model.tc_drop_rule == "authors"  # ... and drops first come, first served, keeping C - 1
    if kind == "expert_choice":  # one token per expert per group of E: dense FLOPs
        assert model.ec_tokens_per_expert == 1 and model.group_size == model.n_experts


def test_every_preset_belongs_to_one_figure_and_cpu_presets_stay_offline():
    groups = presets_by_figure()
    assert sorted(p.name for ps in groups.values() for p in ps) == sorted(PRESETS)
    cpu = [p for figure, ps in groups.items() if figure.startswith("CPU") for p in ps]
    assert {p.name for p in cpu} == {
        "tiny-dense", "tiny-mot", "tiny-token-choice", "tiny-expert-choice",
        "narrow-dense", "narrow-mot", "narrow-mot-32e-4", "narrow-mot-8e", "narrow-token-choice",
        "narrow-expert-choice",
        "narrow-llama-dense", "narrow-llama-mot", "narrow-llama-token-choice",
        "tiny-bert-dense", "tiny-bert-mot", "tiny-bert-mot-seq",
        "llama-tiny-dense", "llama-tiny-mot", "llama-tiny-token-choice",
    }  # fmt: skip
    # packaged text (the capacity-bound group adds the Brown corpus, which also ships in a package)
    assert all(p.train.data in ("packaged", "packaged+brown") and p.train.tokenizer == "bpe" for p in cpu)
    assert all(p.train.data == "c4" for ps in groups.values() for p in ps if p not in cpu)
    assert len(groups) == 9  # four CPU groups, five figures and tables of the paper


def test_base_64e_16_follows_the_naming_rule_and_says_so():
    preset = get_preset("mot-base-64e-16")
    assert (preset.model.n_experts, preset.model.expert_size) == (1024, 192)
    assert "2048" in preset.description and "96" in preset.description


def test_presets_command_groups_by_figure(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert out.index('Fig. "more experts"') < out.index("mot-medium-128e") < out.index('Fig. "mixtures per expert"')
    assert out.index('Fig. "vs sparse MoE"') < out.index("token-choice-medium")


def test_paper_preset_refuses_an_unreachable_hub_before_any_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    opened = []
    monkeypatch.setattr(streaming, "import_datasets", lambda: opened.append(1))
    assert main(["train", "--preset", "transformer-medium", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--data packaged+brown --tokenizer gpt2" in err and "c4:PATH" in err
    assert opened == []  # the datasets library was never asked


def test_unreachable_hub_reason(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert streaming.hub_unreachable_reason() == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(streaming.socket, "create_connection", refuse)
    assert "cannot be reached" in streaming.hub_unreachable_reason()


def test_dry_run_names_the_data_and_tokenizer_with_their_sizes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a dry run reads nothing, so an unreachable hub does not matter
    assert main(["train", "--preset", "transformer-medium", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "data: c4, tokenizer gpt2 (GPT-2's byte-level BPE, 50,257 tokens); not prepared yet" in out
    assert "the run reads 9,830,400,000 training tokens (150,000 steps)" in out  # 150K x 256 x 256: about 10B
