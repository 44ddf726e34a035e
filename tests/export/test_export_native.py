"""`mot export --to hf` of a Llama-style model writes transformers' own architecture (LlamaForCausalLM,
Qwen3ForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM) with its save_pretrained: it loads with
AutoModelForCausalLM.from_pretrained(DIR) without remote code and without this package, its logits equal the
package's (float32, 1e-5), its files are the ones transformers writes; the command says which format it wrote,
and a model with no native architecture keeps the remote-code export or is refused in one sentence. A Llama-style
model with no native architecture (MoT, or a block mixing the two styles) is written as remote code that, in a
process whose sys.path lacks this package, equals the package (logits, loss, left-padded batched greedy generate)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus import write_corpus
from helpers import EVAL_VOCAB, build_model, eval_config

import mixture_of_tokens
from mixture_of_tokens import load_model, load_tokenizer
from mixture_of_tokens.checkpoint import save_checkpoint
from mixture_of_tokens.cli import main
from mixture_of_tokens.config import TrainConfig
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.export.native import native_problem, native_target
from mixture_of_tokens.generate import generate_tokens
from mixture_of_tokens.layers import batch_multiple

transformers = pytest.importorskip("transformers", reason="transformers is in the test extra: pip install -e '.[test]'")

LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=1, dense_bias=False)
CASES = {
    "llama": ("LlamaForCausalLM", dict(ffn="dense")),
    "qwen3": ("Qwen3ForCausalLM", dict(ffn="dense", qk_norm=True, tie_embeddings=True)),
    "qwen2_moe": ("Qwen2MoeForCausalLM", dict(ffn="token_choice", ffn_blocks="second-half", n_blocks=3)),
    "qwen3_moe": (
        "Qwen3MoeForCausalLM",
        dict(ffn="token_choice", ffn_blocks="1", n_blocks=2, qk_norm=True, top_k=2, tc_norm_topk_prob=True),
    ),
}


def _checkpoint(root, name, overrides, seed=5):
    """An eval_config model in the Llama-style block with spread-out routing and non-trivial norm weights, saved as
    a checkpoint of a small local corpus."""
    source = f"text:{write_corpus(root / 'corpus', n_documents=20)}"
    data = prepare_data(source, vocab_size=EVAL_VOCAB, progress=False)
    config = eval_config(n_heads=2, expert_size=32, d_ff=48, **{**LLAMA_STYLE, **overrides})
    model = build_model(config, seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter.dim() == 1:  # RMSNorm weights away from 1
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            elif parameter_name.endswith("router"):  # top-k choices that differ between tokens
                parameter.mul_(40)
    train = TrainConfig(steps=1, batch_size=8, eval_batches=2, data=source, device="cpu")
    return save_checkpoint(root / f"ckpt-{name}", model, config, train, data.tokenizer)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, module_cache_dir):
    root = tmp_path_factory.mktemp("native")
    directories = {}
    for name, (_, overrides) in CASES.items():
        checkpoint = _checkpoint(root, name, overrides)
        out = root / f"hf-{name}"
        assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(out)]) == 0
        directories[name] = (checkpoint, out)
    return directories


def _native_model(directory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setitem(sys.modules, "mixture_of_tokens", None)  # the native model must not need this package
        return transformers.AutoModelForCausalLM.from_pretrained(str(directory)).eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_native_export_loads_without_remote_code_and_equals_the_package(exported, name):
    architecture, _ = CASES[name]
    checkpoint, directory = exported[name]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == name and config["architectures"] == [architecture]
    assert "auto_map" not in config and "mixture_of_tokens" not in config
    assert not (directory / "modeling_mot.py").exists()
    theirs = _native_model(directory)
    assert type(theirs).__name__ == architecture
    ours = load_model(checkpoint)
    ids = torch.randint(0, EVAL_VOCAB, (5, ours.config.max_seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ours(ids).logits, theirs(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    if name.endswith("_moe"):  # routing is spread: the experts differ in their load
        load = ours.blocks[-1].ffn.expert_load
        assert load is not None and float(load.max()) < 0.9
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert tokenizer.eos_token_id == load_tokenizer(checkpoint).eos_id == config["eos_token_id"]


def test_the_directory_is_what_transformers_saves(exported, tmp_path):
    """Loading the export and saving it again with transformers gives the same config and the same tensors."""
    _, directory = exported["qwen2_moe"]
    model = _native_model(directory)
    model.save_pretrained(str(tmp_path))
    from safetensors.torch import load_file

    ours, again = load_file(str(directory / "model.safetensors")), load_file(str(tmp_path / "model.safetensors"))
    assert ours.keys() == again.keys() and all(torch.equal(ours[k], again[k]) for k in ours)
    config, config_again = (json.loads((d / "config.json").read_text()) for d in (directory, tmp_path))
    assert config == config_again
    assert config["shared_expert_intermediate_size"] == 0 and config["mlp_only_layers"] == [0]
    assert config["norm_topk_prob"] is False and config["num_experts_per_tok"] == 1
    assert any(".mlp.experts.0.gate_proj.weight" in key for key in ours)  # transformers' checkpoint layout


def test_greedy_generation_equals_the_package(exported):
    checkpoint, directory = exported["qwen3_moe"]
    theirs = _native_model(directory)
    prompts = torch.randint(0, EVAL_VOCAB, (3, 5), generator=torch.Generator().manual_seed(2))
    generated = theirs.generate(prompts, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(prompts))
    ours = generate_tokens(load_model(checkpoint), prompts.tolist(), max_new_tokens=6)
    assert generated[:, 5:].tolist() == ours.new_tokens


def test_the_command_says_what_it_wrote(exported, tmp_path, capsys):
    checkpoint, _ = exported["llama"]
    assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "as transformers' native LlamaForCausalLM (no remote code)" in out
    assert f"from_pretrained({str(tmp_path / 'a')!r})" in out and "trust_remote_code" not in out
    paper = _checkpoint(tmp_path, "mot", {"ffn": "mot", "positions": "learned", "norm": "layernorm",
                                          "ffn_activation": "relu", "n_kv_heads": 0, "dense_bias": True})  # fmt: skip
    assert main(["export", "--checkpoint", str(paper), "--to", "hf", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "as remote code (MoTForCausalLM in modeling_mot.py, trust_remote_code)" in out
    assert "its block is not the Llama-style one" in out and "trust_remote_code=True)" in out


def test_from_pretrained_on_a_native_export_names_the_call_that_loads_it(exported):
    """A native export's weights carry transformers' names: Transformer.from_pretrained refuses it in one sentence
    naming AutoModelForCausalLM.from_pretrained(DIR) (no remote code) and the checkpoint it came from; it is never
    'incompatible with this version'."""
    _, directory = exported["qwen2_moe"]
    with pytest.raises(ValueError) as error:
        mixture_of_tokens.Transformer.from_pretrained(directory)
    message = str(error.value)
    assert message.startswith(f"{directory} is a transformers model directory (model_type 'qwen2_moe')")
    assert f"AutoModelForCausalLM.from_pretrained({str(directory)!r})," in message
    assert "trust_remote_code" not in message and "incompatible" not in message and "\n" not in message


def test_native_export_files_have_the_usual_mode(exported):
    """transformers' save_pretrained writes model.safetensors through safetensors (mode 0600); every file of the
    export gets the mode of a new file (0o666 less the umask: 0644 under umask 022)."""
    umask = os.umask(0o022)
    os.umask(umask)
    for _, directory in exported.values():
        modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}
        assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_a_model_neither_native_nor_remote_code_is_one_sentence(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, "llama-expert-choice", {"ffn": "expert_choice"})
    assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and not (tmp_path / "x").exists()
    assert "does not export expert_choice layers; exportable kinds: dense, mot, token_choice" in err


def test_native_targets():
    llama = eval_config(**LLAMA_STYLE, ffn="dense")
    assert native_target(llama).architecture == "LlamaForCausalLM" and native_problem(llama) is None
    assert native_target(eval_config(ffn="dense")) is None
    assert "positions='learned'" in native_problem(eval_config(ffn="dense"))
    assert native_target(eval_config(**LLAMA_STYLE, ffn="expert_choice")) is None
    assert native_target(eval_config(**{**LLAMA_STYLE, "dense_bias": True}, ffn="dense")) is None


def test_left_padded_batched_generate_equals_the_package(exported):
    """Prompts of different lengths, left-padded in one batch: each row's greedy continuation is the package's for
    that prompt alone (positions follow the attention mask; Token Choice rows are independent)."""
    checkpoint, directory = exported["qwen2_moe"]
    theirs = _native_model(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    tokenizer.padding_side = "left"
    texts = ["The cat sees the river and the", "A dog", "Naive cafe, 42 ships sailed"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    generated = theirs.generate(**batch, max_new_tokens=5, do_sample=False)
    package_tokenizer, ours = load_tokenizer(checkpoint), load_model(checkpoint)
    for row, text in enumerate(texts):
        alone = generate_tokens(ours, [package_tokenizer.encode_batch([text])[0]], max_new_tokens=5)
        assert generated[row, batch.input_ids.shape[1] :].tolist() == alone.new_tokens[0]


def test_llama_style_mot_switched_in_one_run_exports_natively(tmp_path, capsys):
    """The whole road: train a tiny Llama-style MoT, switch it to Token Choice in the same run, export it natively,
    load it in transformers alone, score and generate as the package does."""
    from corpus import write_corpus
    from helpers import tiny_model_config, tiny_train_config

    from mixture_of_tokens.training.loop import train

    write_corpus(tmp_path / "corpus", n_documents=20, sentences=30)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
        source = f"text:{tmp_path / 'corpus'}"
        prepared = prepare_data(source, vocab_size=300, progress=False)
        model_config = tiny_model_config(d_ff=88, expert_size=88, **LLAMA_STYLE)  # MoT /4E in the second half
        train_config = tiny_train_config(source, tmp_path / "run", steps=6, switch_to="token-choice", switch_at=3)
        train(model_config, train_config, run_name="run", data=prepared, progress=False)
        assert main(["export", "--checkpoint", str(tmp_path / "run"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
        assert "as transformers' native Qwen2MoeForCausalLM (no remote code)" in capsys.readouterr().out
        ours = load_model(tmp_path / "run")
    assert ours.config.block_ffn_kinds() == ["dense", "token_choice"]
    theirs = _native_model(tmp_path / "hf")
    ids = torch.randint(0, 300, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = ours(ids, ids), theirs(input_ids=ids, labels=ids)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=0)
    shifted = torch.nn.functional.cross_entropy(expected.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert float(got.loss) == pytest.approx(float(shifted), abs=1e-5)
    generated = theirs.generate(
        ids[:, :8], max_new_tokens=4, do_sample=False, attention_mask=torch.ones_like(ids[:, :8])
    )
    assert generated[:, 8:].tolist() == generate_tokens(ours, ids[:, :8].tolist(), max_new_tokens=4).new_tokens


# ------------------------------------------------------------------- no native architecture: remote code, any block

REMOTE_CASES = {
    "llama-mot": (  # a SwiGLU dense block and a MoT block of SwiGLU experts; RoPE base, eps and qk norms not default
        "its mot layers have no transformers counterpart",
        dict(ffn="mot", ffn_blocks="1", n_blocks=2, qk_norm=True, rope_base=500.0, norm_eps=1e-6),
    ),
    "llama-mot-ablations": (
        "its mot layers have no transformers counterpart",
        dict(ffn="mot", mot_emit="experts", mot_separate_emit_controller=True, mot_learnable_temperature="per_expert"),
    ),
    "llama-token-choice-mixed": (  # dense biases and no final norm: Llama-style otherwise
        "its block is not the Llama-style one (dense_bias=True, final_norm=False)",
        dict(
            ffn="token_choice",
            ffn_blocks="1",
            n_blocks=2,
            top_k=2,
            tc_norm_topk_prob=True,
            dense_bias=True,
            final_norm=False,
            tie_embeddings=True,
        ),
    ),  # fmt: skip
    "rope-layernorm-relu": (  # RoPE, grouped-query attention and query/key RMSNorms in the paper's other parts
        "its block is not the Llama-style one (norm='layernorm', ffn_activation='relu', dense_bias=True)",
        dict(ffn="dense", norm="layernorm", ffn_activation="relu", dense_bias=True, qk_norm=True, rope_base=2e4),
    ),
}

REMOTE_SCRIPT = """
import os, sys
package_source, directory, inputs, outputs = sys.argv[1:5]
sys.path[:] = [path for path in sys.path if os.path.realpath(path or ".") != package_source]
import importlib.util
assert importlib.util.find_spec("mixture_of_tokens") is None, "the package is importable"
import torch
from transformers import AutoModelForCausalLM

given = torch.load(inputs)
models = {
    implementation: AutoModelForCausalLM.from_pretrained(
        directory, trust_remote_code=True, dtype=torch.float32, attn_implementation=implementation
    ).eval()
    for implementation in ("sdpa", "eager")
}
model = models["sdpa"]
model.generation_config.eos_token_id = None  # the package's decoding runs max_new_tokens; eos is an ordinary token
with torch.no_grad():
    scored = model(input_ids=given["ids"], labels=given["ids"])
    padded = [m(input_ids=given["prompts"], attention_mask=given["mask"]).logits for m in models.values()]
generated = model.generate(
    input_ids=given["prompts"], attention_mask=given["mask"], max_new_tokens=given["new"], do_sample=False
)
torch.save({
    "class": type(model).__name__, "logits": scored.logits, "loss": scored.loss, "generated": generated,
    "eager_vs_sdpa": float((padded[0] - padded[1])[given["mask"].bool()].abs().max()),
    "package_modules": [name for name in sys.modules if name.startswith("mixture_of_tokens")],
}, outputs)
"""
"""Loads an export with transformers alone (this package off sys.path), scores, runs left-padded batched greedy
generate, and compares sdpa with eager attention on the padded batch."""


def run_export_alone(directory: Path, inputs: dict, work: Path) -> dict:
    """REMOTE_SCRIPT on `directory` in a fresh Python whose sys.path lacks this package: its results."""
    work.mkdir(parents=True, exist_ok=True)
    torch.save(inputs, work / "inputs.pt")
    (work / "script.py").write_text(REMOTE_SCRIPT)
    package_source = str(Path(mixture_of_tokens.__file__).resolve().parents[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(work / "modules")}
    done = subprocess.run(
        [sys.executable, str(work / "script.py"), package_source, str(directory), str(work / "inputs.pt"),
         str(work / "outputs.pt")],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(work / "outputs.pt")


@pytest.fixture(scope="module")
def remote_exports(tmp_path_factory, module_cache_dir):
    """Each REMOTE_CASES model saved, exported with the command line (what it printed kept) and run alone."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("remote")
    results = {}
    for name, (_, overrides) in REMOTE_CASES.items():
        checkpoint = _checkpoint(root, name, overrides)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(root / f"hf-{name}")])
        assert code == 0
        ours = load_model(checkpoint)
        inputs = _remote_inputs(ours)
        results[name] = dict(
            checkpoint=checkpoint, directory=root / f"hf-{name}", printed=printed.getvalue(), inputs=inputs,
            alone=run_export_alone(root / f"hf-{name}", inputs, root / f"work-{name}"),
        )  # fmt: skip
    return results


def _remote_inputs(ours) -> dict:
    """Random ids to score (two MoT groups) and 2G left-padded prompts: equal lengths within a unit of rows that
    couple (a MoT group; one row otherwise), different lengths across units."""
    generator = torch.Generator().manual_seed(7)
    rows, unit = 2 * ours.config.group_size, batch_multiple(ours.config)
    ids = torch.randint(0, EVAL_VOCAB, (rows, ours.config.max_seq_len), generator=generator)
    lengths = [3 + 2 * (row // unit) for row in range(rows)]
    prompts = torch.zeros(rows, max(lengths), dtype=torch.long)
    mask = torch.zeros_like(prompts)
    for row, length in enumerate(lengths):
        prompts[row, -length:] = torch.randint(1, EVAL_VOCAB, (length,), generator=generator)
        mask[row, -length:] = 1
    return {"ids": ids, "prompts": prompts, "mask": mask, "new": 5, "unit": unit}


@pytest.mark.parametrize("name", sorted(REMOTE_CASES))
def test_a_model_with_no_native_architecture_is_remote_code_equal_to_the_package(remote_exports, name):
    """Loaded by transformers alone (trust_remote_code, this package not importable), the export's logits and
    loss equal the package's (float32, 1e-5); sdpa and eager attention agree on a padded batch."""
    case = remote_exports[name]
    config = json.loads((case["directory"] / "config.json").read_text())
    assert config["model_type"] == "mixture_of_tokens" and config["auto_map"]["AutoModelForCausalLM"].startswith(
        "modeling_mot."
    )
    alone, ids = case["alone"], case["inputs"]["ids"]
    assert alone["class"] == "MoTForCausalLM" and alone["package_modules"] == []
    ours = load_model(case["checkpoint"])
    with torch.no_grad():
        expected = ours(ids).logits
    torch.testing.assert_close(alone["logits"], expected, atol=1e-5, rtol=0)
    shifted = torch.nn.functional.cross_entropy(expected[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    assert float(alone["loss"]) == pytest.approx(float(shifted), abs=1e-5)
    assert alone["eager_vs_sdpa"] <= 1e-5


@pytest.mark.parametrize("name", sorted(REMOTE_CASES))
def test_left_padded_batched_generate_of_a_remote_export_equals_the_package(remote_exports, name):
    """Greedy generate() on a left-padded batch gives, row for row, the package's greedy tokens (its KV-cache
    decoding, RoPE at the cached positions) for the same prompts: each prompt alone, or for MoT each group of G
    prompts of one length (a group left-padded as a whole keeps its padding out of the mix)."""
    case = remote_exports[name]
    inputs, ours = case["inputs"], load_model(case["checkpoint"])
    prompts = [row[mask.bool()].tolist() for row, mask in zip(inputs["prompts"], inputs["mask"])]
    unit, width = inputs["unit"], inputs["prompts"].shape[1]
    expected = []
    for start in range(0, len(prompts), unit):
        expected += generate_tokens(ours, prompts[start : start + unit], max_new_tokens=inputs["new"]).new_tokens
    assert case["alone"]["generated"][:, width:].tolist() == expected
    assert len({len(p) for p in prompts}) > 1  # the batch was padded


@pytest.mark.parametrize("name", sorted(REMOTE_CASES))
def test_the_command_says_it_wrote_remote_code_and_why(remote_exports, name):
    reason, _ = REMOTE_CASES[name]
    case = remote_exports[name]
    printed = " ".join(case["printed"].split())
    assert "as remote code (MoTForCausalLM in modeling_mot.py, trust_remote_code)" in printed
    assert f"no native transformers architecture, as {reason}" in printed
    assert f"from_pretrained({str(case['directory'])!r}, trust_remote_code=True)" in printed
    card = " ".join((case["directory"] / "README.md").read_text().split())
    assert "Block: rotary positions (RoPE, base" in card
