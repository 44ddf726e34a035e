"""End-to-end: the trainer on a small text fixture, the run directory it writes, the CLI and the schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from corpus import write_corpus
from safetensors.torch import load_model

from mixture_of_tokens import ModelConfig, TrainConfig, Transformer
from mixture_of_tokens.cli import main
from mixture_of_tokens.evaluation import evaluate_loss
from mixture_of_tokens.experiments.report import comparison_table, load_run, plot_runs
from mixture_of_tokens.training.loop import train
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.schedule import lr_multiplier

TINY_MODEL = ModelConfig(
    vocab_size=300,
    max_seq_len=32,
    d_model=32,
    n_blocks=2,
    n_heads=2,
    d_ff=128,
    ffn="mot",
    ffn_blocks="second-half",
    group_size=4,
    n_experts=4,
    expert_size=128,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("train")
    write_corpus(root / "corpus")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MOT_CACHE_DIR", str(root / "cache"))
    runs = {}
    for ffn in ("dense", "mot"):
        model_config = ModelConfig(**{**TINY_MODEL.__dict__, "ffn": ffn})
        train_config = TrainConfig(
            steps=60,
            batch_size=8,
            lr=3e-3,
            warmup_steps=6,
            eval_every=20,
            eval_batches=2,
            log_every=5,
            data=f"text:{root / 'corpus'}",
            out_dir=str(root / ffn),
            device="cpu",
        )
        runs[ffn] = (train(model_config, train_config, run_name=f"fixture-{ffn}", progress=False), train_config)
    yield {"root": root, "runs": runs}
    monkeypatch.undo()


@pytest.mark.parametrize("ffn", ["dense", "mot"])
def test_eval_loss_falls_below_unigram_entropy(trained: dict, ffn: str) -> None:
    result, _ = trained["runs"][ffn]
    steps = sorted(result.eval_losses)
    assert steps == [20, 40, 60]
    assert result.eval_losses[60] < result.eval_losses[20]
    assert result.final_eval_loss < result.unigram_entropy


def test_run_directory_has_metrics_config_and_weights(trained: dict) -> None:
    result, train_config = trained["runs"]["mot"]
    records = read_metrics(result.out_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(5, 61, 5))
    for key in ("loss", "lm_loss", "lr", "grad_norm", "tokens_per_s", "routing.block1.entropy_mean"):
        assert key in records[-1], key
    assert "routing.block0.entropy_mean" not in records[-1]  # block 0 is dense in the second-half layout
    config = json.loads((result.out_dir / "config.json").read_text())
    model = Transformer(ModelConfig(**config["model"]))
    load_model(model, str(result.out_dir / "model.safetensors"))
    assert (
        sum(p.numel() for p in model.parameters())
        == json.loads((result.out_dir / "summary.json").read_text())["counts"]["total_params"]
    )
    # the saved weights reproduce the logged final held-out loss
    from mixture_of_tokens.data import eval_batches, prepare_data

    data = prepare_data(train_config.data, vocab_size=TINY_MODEL.vocab_size, progress=False)
    batches = eval_batches(data.eval_tokens, train_config.batch_size, TINY_MODEL.max_seq_len, 2)
    assert evaluate_loss(model, batches, torch.device("cpu")) == pytest.approx(result.final_eval_loss, rel=1e-5)


def test_compare_table_and_plot(trained: dict, tmp_path: Path) -> None:
    runs = [load_run(trained["runs"][ffn][0].out_dir) for ffn in ("dense", "mot")]
    table = comparison_table(runs)
    assert "fixture-dense" in table and "fixture-mot" in table
    assert f"{runs[1].final_eval_loss:.3f}" in table
    plot = plot_runs(runs, tmp_path / "plot.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_schedule_warmup_then_cosine_to_min_ratio() -> None:
    kwargs = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.1}
    assert lr_multiplier(0, **kwargs) == pytest.approx(0.1)
    assert lr_multiplier(9, **kwargs) == pytest.approx(1.0)
    assert lr_multiplier(10, **kwargs) == pytest.approx(1.0)
    assert lr_multiplier(60, **kwargs) == pytest.approx(0.55)
    assert lr_multiplier(110, **kwargs) == pytest.approx(0.1)
    values = [lr_multiplier(s, **kwargs) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cli_dry_run_prints_counts(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "tiny-mot", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "active/token" in out and "dense, dense, mot, mot" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--preset", "nope"], "allowed values: tiny-dense"),
        (["train", "--preset", "tiny-mot", "--group-size", "5", "--dry-run"], "allowed group sizes"),
        (["train", "--preset", "tiny-mot", "--ffn-blocks", "9", "--dry-run"], "ffn_blocks"),
        (["train", "--preset", "tiny-mot", "--mot-routing", "argmax", "--dry-run"], "routing"),
        (["train", "--preset", "tiny-dense", "--n-heads", "5", "--dry-run"], "n_heads=5"),
        (["compare", "/nonexistent/run"], "not a finished run directory"),
    ],
)
def test_cli_bad_input_is_one_clear_sentence(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_help_lists_every_config_field(capsys: pytest.CaptureFixture) -> None:
    import dataclasses

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for cls in (ModelConfig, TrainConfig):
        for field in dataclasses.fields(cls):
            assert "--" + field.name.replace("_", "-") in out


def test_tensorboard_tags_are_grouped_and_the_config_is_logged_as_hparams(trainer_factory) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    trainer = trainer_factory(tensorboard=True, steps=4, eval_every=2)
    trainer.run()
    events = EventAccumulator(str(trainer.out_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lm_loss", "train/lr", "train/grad_norm", "eval/loss"} <= tags
    assert "routing/block1/entropy_mean" in tags and "perf/tokens_per_s" in tags
    assert all("/" in tag for tag in tags), tags  # nothing left ungrouped
    assert [event.step for event in events.Scalars("eval/loss")] == [2, 4]

    content = events.PluginTagToContent("hparams")
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    logged = hparams.session_start_info.hparams
    assert logged["model/ffn"].string_value == "mot" and logged["model/group_size"].number_value == 4
    assert logged["train/steps"].number_value == 4 and logged["train/tensorboard"].number_value == 1
    assert "config/text_summary" in events.Tags()["tensors"]


def test_evaluation_runs_in_the_training_micro_batches(trainer_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """grad_accum_steps=4 at batch 16: the held-out loss runs 4 rows per forward (MoT's group size 4 keeps its groups),
    with the chunked loss (no full logits), and equals the whole batches' loss."""
    forwards: list[tuple[int, bool, bool]] = []  # rows, gradients enabled, logits asked for
    original = Transformer.forward

    def spy(self, ids, targets=None, **kwargs):
        forwards.append((ids.shape[0], torch.is_grad_enabled(), kwargs.get("return_logits", True)))
        return original(self, ids, targets, **kwargs)

    monkeypatch.setattr(Transformer, "forward", spy)
    trainer = trainer_factory({"ffn_blocks": "all"}, steps=4, batch_size=16, grad_accum_steps=4, eval_every=4)
    result = trainer.run()
    evaluation = [call for call in forwards if not call[1]]
    assert [call[0] for call in forwards if call[1]] == [4] * 4 * 4  # 4 steps of 4 micro-batches
    assert evaluation == [(4, False, False)] * 2 * 4  # 2 held-out batches of 16 rows, 4 rows at a time
    forwards.clear()
    whole = evaluate_loss(trainer.raw_model, trainer.checkpointer.held_out, torch.device("cpu"))
    assert forwards == [(16, False, False)] * 2
    assert result.final_eval_loss == pytest.approx(whole, abs=1e-5)
