"""Transition tuning: MoT -> Token Choice conversion, continued training, and the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from corpus import write_corpus
from reference_sparse import reference_token_choice
from safetensors.torch import load_file

from mixture_of_tokens import ModelConfig, TrainConfig
from mixture_of_tokens.checkpoint import load_model, read_config
from mixture_of_tokens.cli import main
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.experiments.transition import run_transition_experiment
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.layers.token_choice import TokenChoice
from mixture_of_tokens.training.loop import train
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.schedule import lr_multiplier
from mixture_of_tokens.transition import convert_checkpoint

MOT_MODEL = ModelConfig(
    vocab_size=300, max_seq_len=16, d_model=32, n_blocks=2, n_heads=2, d_ff=64,
    ffn="mot", ffn_blocks="second-half", group_size=4, n_experts=4, expert_size=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("transition")
    write_corpus(root / "corpus", n_documents=20)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MOT_CACHE_DIR", str(root / "cache"))
    source = f"text:{root / 'corpus'}"
    data = prepare_data(source, vocab_size=300, progress=False)
    runs = {}
    for ffn in ("mot", "dense"):
        config = TrainConfig(steps=6, batch_size=8, warmup_steps=1, eval_every=3, eval_batches=1, log_every=1,
                             data=source, out_dir=str(root / ffn), device="cpu")  # fmt: skip
        train(ModelConfig(**{**MOT_MODEL.__dict__, "ffn": ffn}), config, run_name=ffn, data=data, progress=False)
        runs[ffn] = root / ffn
    yield {"root": root, "runs": runs, "data": data, "source": source}
    monkeypatch.undo()


def test_conversion_preserves_every_tensor_bit_for_bit(trained: dict, tmp_path: Path) -> None:
    out = convert_checkpoint(trained["runs"]["mot"], tmp_path / "tc", "token-choice")
    source, converted = load_file(trained["runs"]["mot"] / "model.safetensors"), load_file(out / "model.safetensors")
    renamed = {name.replace("ffn.controller", "ffn.router"): tensor for name, tensor in source.items()}
    assert renamed.keys() == converted.keys()
    for name, tensor in renamed.items():
        assert torch.equal(tensor, converted[name]), name
    config = read_config(out)
    assert config["model"]["ffn"] == "token_choice" and config["model"]["ffn_blocks"] == "second-half"
    assert config["model"]["tc_top_k"] == 1 and config["model"]["tc_capacity_factor"] == 1.25
    assert config["model"]["tc_load_balance_weight"] == 0.01
    assert config["converted_from"]["target"] == "token-choice"
    assert config["converted_from"]["source_model"]["ffn"] == "mot"
    model, model_config, _ = load_model(out)  # loads strictly into the Token Choice architecture
    assert model_config.block_ffn_kinds() == ["dense", "token_choice"]


def test_converted_layer_computes_token_choice_on_the_mot_weights(trained: dict, tmp_path: Path) -> None:
    # capacity never binds
    out = convert_checkpoint(trained["runs"]["mot"], tmp_path / "tc", "token-choice", capacity_factor=100.0)
    mot_model, _, _ = load_model(trained["runs"]["mot"])
    tc_model, _, _ = load_model(out)
    mot_layer, tc_layer = mot_model.blocks[1].ffn, tc_model.blocks[1].ffn
    assert isinstance(mot_layer, MixtureOfTokens) and isinstance(tc_layer, TokenChoice)
    tc_layer = tc_layer.double()
    x = torch.randn(4, 5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected, _, _ = reference_token_choice(
        x, *(t.detach().double() for t in (mot_layer.controller, mot_layer.w1, mot_layer.w2)), capacity_factor=100.0
    )
    torch.testing.assert_close(tc_layer(x), expected, rtol=1e-10, atol=1e-10)
    # top-1 by hand: the expert the MoT controller scores highest, scaled by its softmax-over-experts probability
    probs = torch.softmax(x @ mot_layer.controller.double(), dim=-1)
    gate, expert = probs.max(dim=-1)
    by_hand = torch.stack([
        gate[b, s] * (torch.relu(x[b, s] @ mot_layer.w1.double()[expert[b, s]]) @ mot_layer.w2.double()[expert[b, s]])
        for b in range(4) for s in range(5)
    ]).view(4, 5, 32)  # fmt: skip
    torch.testing.assert_close(tc_layer(x), by_hand, rtol=1e-10, atol=1e-10)


def test_other_targets(trained: dict, tmp_path: Path) -> None:
    expert_choice = convert_checkpoint(trained["runs"]["mot"], tmp_path / "ec", "expert-choice")
    assert load_model(expert_choice)[1].block_ffn_kinds() == ["dense", "expert_choice"]
    discrete = convert_checkpoint(trained["runs"]["mot"], tmp_path / "dm", "discrete-mot")
    model, config, _ = load_model(discrete)
    assert config.mot_routing == "discrete" and model.blocks[1].ffn.routing == "discrete"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "token-choice"], "no MoT layer"),
        (["--to", "switch"], "allowed values: token-choice, expert-choice, discrete-mot"),
    ],
)
def test_bad_conversions_write_nothing(trained: dict, tmp_path: Path, args: list[str], message: str, capsys) -> None:
    source = trained["runs"]["dense"] if "no MoT" in message else trained["runs"]["mot"]
    out = tmp_path / "out"
    assert main(["convert", "--checkpoint", str(source), "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_existing_out_needs_force(trained: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    argv = ["convert", "--checkpoint", str(trained["runs"]["mot"]), "--to", "token-choice", "--out", str(out)]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert main([*argv, "--force"]) == 0
    assert (out / "model.safetensors").exists()


def test_continue_training_from_the_converted_checkpoint(trained: dict, tmp_path: Path, capsys) -> None:
    converted = convert_checkpoint(trained["runs"]["mot"], tmp_path / "tc", "token-choice")
    out = tmp_path / "continued"
    argv = ["train", "--init-from", str(converted), "--steps", "3", "--lr-schedule-offset", "6", "--eval-every", "3",
            "--log-every", "1", "--out-dir", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(k.startswith("aux.block1.") for k in records[-1])  # the Token Choice load-balancing loss is on
    source = read_config(trained["runs"]["mot"])["train"]
    # continued schedule: steps 7..9 of the source run's cosine extended to 9 steps, not a fresh warmup
    kwargs = {"warmup_steps": source["warmup_steps"], "total_steps": 9, "min_ratio": source["min_lr_ratio"]}
    expected = [source["lr"] * lr_multiplier(6 + i, **kwargs) for i in range(3)]
    assert [r["lr"] for r in records] == pytest.approx(expected, rel=1e-12)
    assert expected[0] < 0.5 * source["lr"]


def test_transition_experiment_reports_all_five_losses(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", n_documents=40, sentences=300)  # eval: 4 docs, >= 32 x 129 tokens
    data = prepare_data(f"text:{corpus}", vocab_size=300, progress=False)
    report = run_transition_experiment(tmp_path / "out", mot_steps=4, continue_steps=2, data=data, progress=False)
    values = [report.mot_before_switch, report.right_after_switch, report.after_recovery,
              report.token_choice_from_scratch, report.dense]  # fmt: skip
    assert all(v == v and v > 0 for v in values)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["right_after_switch"] == pytest.approx(report.right_after_switch)
    assert (tmp_path / "out" / "transition.png").read_bytes()[:4] == b"\x89PNG"
    assert "the spike" in report.table()
    # one run: the spike is the run's own switch record, and the loss if switched now was logged before it
    records = read_metrics(tmp_path / "out" / "transition" / "metrics.jsonl")
    switch = next(r for r in records if r.get("event") == "switch")
    assert (switch["step"], switch["eval_loss_after"]) == (4, report.right_after_switch)
    assert any("eval_loss_if_token-choice" in r for r in records if r["step"] <= 4)
    assert json.loads((tmp_path / "out" / "transition" / "summary.json").read_text())["switch"]["step"] == 4


def test_converted_model_generates_alone_and_independently_of_other_prompts(trained: dict, tmp_path: Path) -> None:
    from mixture_of_tokens.generate import generate_tokens

    out = convert_checkpoint(trained["runs"]["mot"], tmp_path / "tc", "token-choice")
    model, _, _ = load_model(out)
    prompt = [5, 17, 42]
    others = [[7, 8, 9, 10, 11], [3, 1, 4], [99, 98]]
    alone = generate_tokens(model, [prompt], max_new_tokens=8, keep_logits=True)  # batch of one, no filler rows
    assert alone.n_filler_rows == 0 and len(alone.new_tokens[0]) == 8
    together = generate_tokens(model, [*others[:2], prompt, others[2]], max_new_tokens=8)
    assert together.new_tokens[2] == alone.new_tokens[0]
    # the capacities used in training come back after decoding
    assert model.blocks[1].ffn.capacity_factor == 1.25
    # whereas the MoT source needs a group of prompts: alone it must be filled with other text
    mot_model, _, _ = load_model(trained["runs"]["mot"])
    with pytest.raises(ValueError, match="needs held-out filler text"):
        generate_tokens(mot_model, [prompt], max_new_tokens=4)


def test_init_from_starts_from_the_checkpoint_weights(trained: dict, tmp_path: Path) -> None:
    from mixture_of_tokens.training.loop import Trainer

    converted = convert_checkpoint(trained["runs"]["mot"], tmp_path / "tc", "token-choice")
    _, model_config, train_config = load_model(converted)
    config = TrainConfig(**{**train_config.__dict__, "out_dir": str(tmp_path / "run"), "steps": 1})
    trainer = Trainer(model_config, config, data=trained["data"], progress=False, init_from=converted)
    expected = load_file(converted / "model.safetensors")
    state = trainer.raw_model.state_dict()
    assert expected.keys() == state.keys()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
