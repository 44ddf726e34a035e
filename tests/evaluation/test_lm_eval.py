"""lm-eval for real: lm-evaluation-harness runs the "mot" model on local task files (no hub), on the CPU, and its
per-document scores equal `mot eval`'s for the same documents (dense: plain batches; MoT: the protocol, whose
filler rows are seeded by the request text in both)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, TASK_FIXTURES, make_checkpoint

from mixture_of_tokens.cli import main
from mixture_of_tokens.evaluation import (
    Scorer,
    evaluate_docs,
    load_checkpoint,
    load_task_file,
    load_texts,
    resolve_policy,
)

pytest.importorskip("lm_eval", reason="lm_eval is in the test extra: pip install -e '.[test]'")

# lm-eval's own prompts for these tasks (its tasks/piqa/piqa.yaml and tasks/arc/arc_easy.yaml), read from local files.
TASKS = {
    "piqa": (
        TASK_FIXTURES / "piqa.jsonl",
        'doc_to_text: "Question: {{goal}}\\nAnswer:"\ndoc_to_target: label\ndoc_to_choice: "{{[sol1, sol2]}}"\n',
    ),
    "arc_easy": (
        TASK_FIXTURES / "arc_easy.json",
        'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
        'doc_to_target: "{{choices.label.index(answerKey)}}"\ndoc_to_choice: "{{choices.text}}"\n',
    ),
}
PROTOCOL_ROWS = 8
GENERATE_TASK = (
    "task: local_piqa_generate\ndataset_path: json\n"
    "dataset_kwargs:\n  data_files:\n    validation: {path}\n  cache_dir: {cache}\n"
    "output_type: generate_until\nvalidation_split: validation\n"
    'doc_to_text: "Question: {{{{goal}}}}\\nAnswer:"\ndoc_to_target: "{{{{sol1}}}}"\n'
    'generation_kwargs:\n  until: ["\\n\\n"]\n  max_gen_toks: 6\n  do_sample: false\n'
    "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    "metadata:\n  version: 1.0\n"
)
"""A generate_until task on the local PIQA file: three questions of different lengths, greedy, 6 new tokens."""


def write_local_tasks(directory: Path, cache: Path) -> Path:
    """One lm-eval task YAML per task, named local_<task>, whose dataset is a local JSON / JSONL file."""
    directory.mkdir(parents=True, exist_ok=True)
    for task, (path, prompts) in TASKS.items():
        (directory / f"local_{task}.yaml").write_text(
            f"task: local_{task}\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    validation: {path}\n  cache_dir: {cache}\n"
            "output_type: multiple_choice\nvalidation_split: validation\n" + prompts + "metric_list:\n"
            "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n",
            encoding="utf-8",
        )
    (directory / "local_piqa_generate.yaml").write_text(
        GENERATE_TASK.format(path=TASK_FIXTURES / "piqa.jsonl", cache=cache), encoding="utf-8"
    )
    return directory


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, module_cache_dir):
    root = tmp_path_factory.mktemp("lm_eval")
    tasks = write_local_tasks(root / "tasks", root / "hf-datasets")
    return {
        "root": root,
        "tasks": tasks,
        "cache": module_cache_dir,
        **{f: make_checkpoint(root, f) for f in ("mot", "dense")},
    }


def mot_eval_per_doc(checkpoint: Path, **policy: object) -> dict[str, list[dict]]:
    """What `mot eval --tasks` computes per document (evaluate_docs with the same Scorer)."""
    loaded = load_checkpoint(checkpoint, "cpu")
    train_tokens, _ = load_texts(loaded, progress=False)
    scorer = Scorer(
        loaded.model, loaded.tokenizer, resolve_policy(loaded.model_config, **policy), filler_tokens=train_tokens
    )
    return {task: evaluate_docs(task, load_task_file(task, path), scorer).per_doc for task, (path, _) in TASKS.items()}


def assert_same_per_doc(samples: dict[str, list[dict]], expected: dict[str, list[dict]]) -> None:
    for task, docs in expected.items():
        got = sorted(samples[f"local_{task}"], key=lambda sample: sample["doc_id"])
        assert len(got) == len(docs)
        for sample, doc in zip(got, docs):
            loglikelihoods = [float(response[0]) for response in sample["filtered_resps"]]
            assert loglikelihoods == doc["loglikelihoods"], (task, sample["doc_id"])  # bit-identical
            assert sample["acc"] == doc["acc"] and sample["acc_norm"] == doc["acc_norm"]


def test_lm_eval_command_line_on_cpu_scores_mot_as_mot_eval(workspace, tmp_path, capsys):
    """`python -m ...lm_eval_adapter` with lm-eval's own arguments and no --device (lm-eval then passes cuda:0):
    the adapter runs on the CPU, and every document's log-likelihoods equal mot eval's under the protocol."""
    out = tmp_path / "lm-eval-out"
    env = {**os.environ, "MOT_CACHE_DIR": str(workspace["cache"]), "HF_HOME": str(tmp_path / "hf")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "mixture_of_tokens.evaluation.lm_eval_adapter", "--model", "mot"]
    command += ["--model_args", f"checkpoint={workspace['mot']},protocol_rows={PROTOCOL_ROWS}"]
    command += ["--tasks", "local_piqa,local_arc_easy", "--include_path", str(workspace["tasks"])]
    command += ["--output_path", str(out), "--log_samples"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    samples = {
        task: [json.loads(line) for line in next(out.rglob(f"samples_local_{task}_*.jsonl")).read_text().splitlines()]
        for task in ("piqa", "arc_easy")
    }
    assert_same_per_doc(
        {f"local_{t}": s for t, s in samples.items()}, mot_eval_per_doc(workspace["mot"], rows=PROTOCOL_ROWS)
    )

    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    mot_eval_out = tmp_path / "mot-eval.json"
    args = ["eval", "--checkpoint", str(workspace["mot"]), "--no-perplexity", "--tasks", "piqa,arc_easy"]
    args += ["--protocol-rows", str(PROTOCOL_ROWS), "--out", str(mot_eval_out)]
    for task, (path, _) in TASKS.items():
        args += ["--task-file", f"{task}={path}"]
    assert main(args) == 0
    capsys.readouterr()
    for task_result in json.loads(mot_eval_out.read_text())["tasks"]:
        for metric in ("acc", "acc_norm"):
            assert math.isclose(
                results[f"local_{task_result['task']}"][f"{metric},none"], task_result["metrics"][metric]
            )


def test_lm_eval_simple_evaluate_scores_dense_as_mot_eval(workspace):
    """lm-eval's Python entry point with a TaskManager on the local tasks: dense, plain batches, same numbers."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from mixture_of_tokens.evaluation.lm_eval_adapter import register

    register()
    manager = TaskManager(include_path=str(workspace["tasks"]))
    output = lm_eval.simple_evaluate(
        model="mot",
        model_args=f"checkpoint={workspace['dense']}",
        tasks=["local_piqa", "local_arc_easy"],
        task_manager=manager,
        log_samples=True,
    )
    assert_same_per_doc(output["samples"], mot_eval_per_doc(workspace["dense"]))


def test_lm_eval_device_and_batch_size_arguments():
    from mixture_of_tokens.evaluation.lm_eval_adapter import lm_eval_batch_size, lm_eval_device

    expected_cuda = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    assert lm_eval_device("cuda:0") == lm_eval_device("cuda") == expected_cuda
    assert lm_eval_device(None) == "auto" and lm_eval_device("cpu") == "cpu"
    assert lm_eval_batch_size("auto") == lm_eval_batch_size("auto:4") == 32 and lm_eval_batch_size("8") == 8


LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=1, dense_bias=False)


@pytest.fixture(scope="module")
def hf_exports(workspace):
    """The dense checkpoint and a Token Choice one, exported for transformers (mot export --to hf) as remote code,
    and both in the Llama-style block, exported natively (LlamaForCausalLM, Qwen2MoeForCausalLM)."""
    root = workspace["root"]
    checkpoints = {
        "dense": workspace["dense"],
        "token_choice": make_checkpoint(root, "token_choice"),
        "native dense": make_checkpoint(root, "dense", name="llama-dense", n_heads=2, **LLAMA_STYLE),
        "native token_choice": make_checkpoint(root, "token_choice", name="llama-tc", n_heads=2, **LLAMA_STYLE),
    }
    exports = {}
    for ffn, checkpoint in checkpoints.items():
        exports[ffn] = workspace["root"] / f"hf-{ffn.replace(' ', '-')}"
        assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(exports[ffn])]) == 0
    return exports


@pytest.mark.parametrize("ffn", ["dense", "token_choice", "native dense", "native token_choice"])
def test_lm_eval_hf_model_generates_in_left_padded_batches_as_alone(workspace, hf_exports, ffn, monkeypatch):
    """lm-eval's own `--model hf` on an export: generate_until at batch size 3 (prompts of different lengths,
    left-padded by lm-eval) gives every document the text it gets at batch size 1. Native exports load without
    trust_remote_code."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manager = TaskManager(include_path=str(workspace["tasks"]))
    generations = {}
    for batch_size in (1, 3):
        output = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={hf_exports[ffn]},dtype=float32"
            + ("" if ffn.startswith("native") else ",trust_remote_code=True"),
            tasks=["local_piqa_generate"],
            task_manager=manager,
            batch_size=batch_size,
            device="cpu",
            log_samples=True,
        )
        samples = sorted(output["samples"]["local_piqa_generate"], key=lambda sample: sample["doc_id"])
        generations[batch_size] = [sample["resps"][0][0] for sample in samples]
    assert len(generations[1]) == 3 and any(generations[1])
    assert generations[3] == generations[1]


# ----------------------------------------------------------------------------------- model_args, lm-eval's way


def test_model_args_pretrained_is_the_checkpoint_and_names_the_results(workspace, tmp_path, monkeypatch, capsys):
    """lm-eval's convention `--model_args pretrained=DIR` (here with dtype and max_length, through lm-eval's command
    line): the checkpoint is DIR, the results are filed under DIR's name, and the scores are mot eval's."""
    from mixture_of_tokens.evaluation import lm_eval_adapter

    out = tmp_path / "out"
    for name, value in dict(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")).items():
        monkeypatch.setenv(name, value)
    argv = ["lm_eval", "--model", "mot", "--model_args", f"pretrained={workspace['dense']},dtype=float32,max_length=48"]
    argv += ["--tasks", "local_piqa,local_arc_easy", "--include_path", str(workspace["tasks"]), "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", argv + ["--output_path", str(out), "--log_samples"])
    lm_eval_adapter.main()
    capsys.readouterr()
    results = next(out.rglob("results_*.json"))
    assert workspace["dense"].name in results.parent.name  # lm-eval names the folder after pretrained=
    samples = {
        f"local_{task}": [json.loads(line) for line in next(out.rglob(f"samples_local_{task}_*.jsonl")).open()]
        for task in TASKS
    }
    assert_same_per_doc(samples, mot_eval_per_doc(workspace["dense"]))


def test_model_args_unknown_keys_and_bad_values_are_one_sentence(workspace):
    from mixture_of_tokens.evaluation.lm_eval_adapter import register

    model_class = register()
    dense = str(workspace["dense"])
    cases = {
        "trust_remote_code": (dict(pretrained=dense, trust_remote_code=True), "model_args trust_remote_code is not"),
        "no checkpoint": (dict(), "model_args needs pretrained=CHECKPOINT"),
        "two checkpoints": (dict(pretrained=dense, checkpoint=str(workspace["mot"])), "name two checkpoints"),
        "dtype": (dict(pretrained=dense, dtype="int8"), "dtype='int8' is not supported; allowed values: auto,"),
        "max_length": (dict(pretrained=dense, max_length=49), "max_length=49 exceeds the model's context of 48"),
    }
    for case, (model_args, expected) in cases.items():
        with pytest.raises(ValueError) as error:
            model_class(**model_args)
        assert expected in str(error.value) and "\n" not in str(error.value), case
    with pytest.raises(ValueError, match="allowed keys: pretrained, checkpoint, dtype, max_length, mot_eval"):
        model_class(pretrained=dense, bogus=1)
    assert model_class(checkpoint=dense).backend.loaded.directory.name == "ckpt-dense"  # the old key still works
    from lm_eval.api.registry import get_model

    assert register() is model_class and get_model("mot") is model_class  # registering twice is harmless
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models are still found after "mot" is registered


def test_dtype_and_max_length_are_honoured(workspace):
    import torch

    from mixture_of_tokens.evaluation.lm_eval_adapter import MoTBackend

    dense = str(workspace["dense"])
    for dtype, expected in [("auto", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]:
        assert next(MoTBackend(dense, dtype=dtype, device="cpu").loaded.model.parameters()).dtype == expected
    full, short = MoTBackend(dense, device="cpu"), MoTBackend(dense, device="cpu", max_length=20)
    context = "The ship sailed across the wide river and the old dog slept by the fire every evening while"
    continuation = " it"
    context_ids, continuation_ids = full.scorer.encode(context, continuation)
    assert len(continuation_ids) < 10 and len(context_ids) > 30
    kept = context_ids[-(21 - len(continuation_ids)) :]  # the model sees the last 20 of context + continuation
    (truncated,) = full.scorer.score_tokens([(kept, continuation_ids)], [("x",)])
    (got,) = short.loglikelihood([(context, continuation)])
    assert got == (truncated.logprob, truncated.is_greedy)
    assert got[0] != full.loglikelihood([(context, continuation)])[0][0]


def test_help_and_a_wrong_model_name_say_lm_eval_model_mot_cannot_find_it(workspace, monkeypatch, capsys):
    """`lm_eval --model mot` finds no third-party model; the adapter's --help, its error for a model lm-eval does
    not know, and docs/evaluation.md name the command that works."""
    command = "python -m mixture_of_tokens.evaluation.lm_eval_adapter"
    done = subprocess.run(
        [sys.executable, "-m", "mixture_of_tokens.evaluation.lm_eval_adapter", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {command} --model mot --model_args pretrained=CHECKPOINT")
    assert "`lm_eval --model mot` cannot do this" in done.stdout and "--tasks" in done.stdout  # lm-eval's help too

    from mixture_of_tokens.evaluation import lm_eval_adapter

    argv = ["lm_eval", "--model", "mot_lm", "--model_args", f"pretrained={workspace['dense']}", "--tasks", "local_piqa"]
    monkeypatch.setattr(sys, "argv", argv + ["--include_path", str(workspace["tasks"]), "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_:
        lm_eval_adapter.main()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and err.startswith(f"{command}: error: lm-eval has no model 'mot_lm'")
    assert f"`lm_eval --model mot` cannot find a third-party model): {command} --model mot" in err

    docs = " ".join((REPO_ROOT / "docs" / "evaluation.md").read_text().split())
    assert f"`lm_eval --model mot` cannot find a third-party model: `{command}` is the command" in docs
