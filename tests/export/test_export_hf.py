"""`mot export --to hf`: transformers loads the directory offline (trust_remote_code) without this package, and its
logits equal the package's for the same ids (dense, MoT, Token Choice; float32, 1e-5); the tokenizer encodes
as the package's; MoT's batch rule holds and is in the model card; unsupported models are one sentence."""

from __future__ import annotations

import ast
import json
import os
import stat
import sys

import pytest
import torch
from helpers import make_checkpoint

from mixture_of_tokens import load_model, load_tokenizer
from mixture_of_tokens.cli import main
from mixture_of_tokens.data import load_gpt2

transformers = pytest.importorskip("transformers", reason="transformers is in the test extra: pip install -e '.[test]'")
TEXTS = ["The cat sees the river.", "  Naïve café, 42 ships!\n\nA new paragraph\twith tabs "]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, module_cache_dir):
    """Each kind trained-free (random weights), saved as a checkpoint and exported with the command line."""
    root = tmp_path_factory.mktemp("export")
    directories = {}
    for ffn in ("mot", "dense", "token_choice"):
        checkpoint = make_checkpoint(root, ffn, seed=3)
        out = root / f"hf-{ffn}"
        assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(out)]) == 0
        directories[ffn] = (checkpoint, out)
    return directories


def _auto_model(directory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setitem(sys.modules, "mixture_of_tokens", None)  # the exported code must not need this package
        return transformers.AutoModelForCausalLM.from_pretrained(str(directory), trust_remote_code=True).eval()


@pytest.mark.parametrize("ffn", ["mot", "dense", "token_choice"])
def test_transformers_loads_the_export_and_its_logits_equal_the_package(exported, ffn):
    checkpoint, directory = exported[ffn]
    ours = load_model(checkpoint)
    theirs = _auto_model(directory)
    rows = 2 * ours.config.group_size  # two MoT groups (any batch for dense and Token Choice)
    ids = torch.randint(
        0, ours.config.vocab_size, (rows, ours.config.max_seq_len), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected, got = ours(ids).logits, theirs(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    with torch.no_grad():  # the next-token loss follows transformers' convention (labels = input ids)
        loss = theirs(input_ids=ids, labels=ids).loss
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(expected[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))

    source = (directory / "modeling_mot.py").read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported <= {"__future__", "torch", "transformers"}

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=True)
    package_tokenizer = load_tokenizer(checkpoint)
    for text in TEXTS:
        ids_ = tokenizer(text, add_special_tokens=False).input_ids
        assert ids_ == package_tokenizer.encode_batch([text])[0] and tokenizer.decode(ids_) == text
    assert tokenizer.eos_token_id == package_tokenizer.eos_id


def test_mot_batch_rule_is_enforced_and_documented(exported):
    checkpoint, directory = exported["mot"]
    theirs = _auto_model(directory)
    with pytest.raises(ValueError, match="multiple of its group size 4, got 3 rows"):
        theirs(input_ids=torch.zeros(3, 5, dtype=torch.long))
    card = (directory / "README.md").read_text()
    assert "the batch must be a multiple of 4" in card and "change each other's outputs" in card
    assert "fill its group with 3 rows of ordinary text" in card
    config = json.loads((directory / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_mot.MoTForCausalLM"
    assert config["model_type"] == "mixture_of_tokens" and config["block_ffn_kinds"] == ["mot", "mot"]
    # generation recomputes the prefix (no cache) and agrees with greedy decoding in the package
    prompt = torch.randint(0, config["vocab_size"], (4, 6), generator=torch.Generator().manual_seed(2))
    generated = theirs.generate(prompt, max_new_tokens=3, do_sample=False, attention_mask=torch.ones_like(prompt))
    from mixture_of_tokens.generate import generate_tokens

    ours = generate_tokens(load_model(checkpoint), prompt.tolist(), max_new_tokens=3)
    assert generated[:, 6:].tolist() == ours.new_tokens


def test_an_existing_destination_and_expert_choice_are_refused(exported, tmp_path, capsys):
    checkpoint, directory = exported["dense"]
    assert main(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", str(directory)]) == 2
    assert "already exists; choose another directory or pass --force" in capsys.readouterr().err
    expert_choice = make_checkpoint(tmp_path, "expert_choice")
    assert main(["export", "--checkpoint", str(expert_choice), "--to", "hf", "--out", str(tmp_path / "ec")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not export expert_choice layers; exportable kinds: dense, mot, token_choice" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ec").exists()
    assert not list(tmp_path.glob("ec-partial-*"))
    masked = tmp_path / "masked"  # a masked-LM config: refused from config.json alone, before the weights
    masked.mkdir()
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["objective"] = "masked"
    (masked / "config.json").write_text(json.dumps(config))
    assert main(["export", "--checkpoint", str(masked), "--to", "hf", "--out", str(tmp_path / "m")]) == 2
    assert "writes causal language models; this checkpoint has objective='masked'" in capsys.readouterr().err


def test_a_missing_transformers_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert main(["export", "--checkpoint", str(tmp_path / "run"), "--to", "hf", "--out", str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err.strip() == (
        "mot export: error: mot export --to hf needs the optional package transformers, which is not installed: "
        "pip install 'mixture-of-tokens[hf]'."
    )
    assert not (tmp_path / "hf").exists()


def test_gpt2_is_rebuilt_for_transformers_and_encodes_as_tiktoken(tmp_path):
    from mixture_of_tokens.export.tokenizer_files import write_tokenizer_files

    write_tokenizer_files(load_gpt2(), tmp_path, max_length=256)
    tokenizer = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    gpt2 = load_gpt2()
    for text in [*TEXTS, "emoji 🚀, 1234567 and 'quotes' isn't it", " leading spaces\n\n\n"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == gpt2.encode(text) and tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == 50256 and len(tokenizer) == 50257


# ------------------------------------------------------------------------------------ padding and batched generate

PROMPTS = ["The cat sees the river and the", "A dog", "Naïve café, 42 ships sailed"]


def _tokenizer(directory, padding_side="right"):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), trust_remote_code=True)
    tokenizer.padding_side = padding_side
    return tokenizer


def test_the_tokenizer_has_the_pad_token_config_json_names(exported):
    directory = exported["dense"][1]
    config = json.loads((directory / "config.json").read_text())
    tokenizer = _tokenizer(directory)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id == config["pad_token_id"]


@pytest.mark.parametrize("ffn", ["dense", "token_choice"])
def test_left_padded_batched_generate_equals_each_prompt_alone(exported, ffn):
    """Positions come from the attention mask and padded keys are masked: every row of a left-padded batch
    generates exactly the greedy continuation it generates alone (generate and pipeline, batch size 2 and 3)."""
    directory = exported[ffn][1]
    model, tokenizer = _auto_model(directory), _tokenizer(directory, "left")
    options = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    alone = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        alone.append(model.generate(**ids, **options)[0, ids.input_ids.shape[1] :].tolist())
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert not batch.attention_mask.all()  # prompts of different lengths: the batch is padded
    batched = model.generate(**batch, **options)[:, batch.input_ids.shape[1] :].tolist()
    assert batched == alone

    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer, batch_size=2)
    texts = [out[0]["generated_text"] for out in pipe(PROMPTS, max_new_tokens=5, do_sample=False)]
    assert texts == [prompt + tokenizer.decode(new) for prompt, new in zip(PROMPTS, alone)]


@pytest.mark.parametrize("ffn", ["dense", "token_choice"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_rows_score_as_each_row_alone(exported, ffn, side):
    """Scoring a padded batch (either side) gives each row its own logits on its real tokens."""
    directory = exported[ffn][1]
    model, tokenizer = _auto_model(directory), _tokenizer(directory, side)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        for row, prompt in enumerate(PROMPTS):
            alone = model(**tokenizer(prompt, return_tensors="pt")).logits[0]
            real = batch.attention_mask[row].bool()
            torch.testing.assert_close(logits[row][real], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ffn", ["dense", "mot"])
def test_sdpa_and_eager_attention_are_accepted_and_agree(exported, ffn):
    """attn_implementation="sdpa" (the default: scaled_dot_product_attention) and "eager" (the plain softmax)
    both load and give the same logits, with and without padding."""
    directory = exported[ffn][1]
    models = {}
    for implementation in ("sdpa", "eager"):
        models[implementation] = transformers.AutoModelForCausalLM.from_pretrained(
            str(directory), trust_remote_code=True, attn_implementation=implementation
        ).eval()
        assert models[implementation].config._attn_implementation == implementation
    assert _auto_model(directory).config._attn_implementation == "sdpa"  # the default
    ids = torch.randint(0, 320, (4, 12), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # a left-padded row
    with torch.no_grad():
        for attention_mask in (None, mask):
            sdpa, eager = (m(input_ids=ids, attention_mask=attention_mask).logits for m in models.values())
            torch.testing.assert_close(eager, sdpa, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ the export in this package


@pytest.mark.parametrize("ffn", ["mot", "token_choice"])
def test_transformer_from_pretrained_loads_an_export(exported, ffn):
    """An export holds the package's weights (same names) and ModelConfig (config.json's mixture_of_tokens
    section): Transformer.from_pretrained and load_model rebuild the package's model from it, bit for bit."""
    from mixture_of_tokens import Transformer

    checkpoint, directory = exported[ffn]
    ours = load_model(checkpoint)
    for loaded in (Transformer.from_pretrained(directory), load_model(directory, dtype=torch.float64)):
        assert isinstance(loaded, Transformer) and not loaded.training and loaded.config == ours.config
        assert loaded.name_or_path == str(directory)
        ids = torch.randint(0, ours.config.vocab_size, (8, 10), generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected, got = ours.double()(ids).logits, loaded.double()(ids).logits
        assert torch.equal(got, expected)


def test_from_pretrained_on_a_foreign_transformers_directory_names_the_right_call(tmp_path):
    """Another transformers directory is one sentence naming the call that loads it: trust_remote_code=True only
    where its config.json maps the model to remote code (auto_map)."""
    from mixture_of_tokens import Transformer

    for name, payload in {
        "gpt2": {"model_type": "gpt2", "n_layer": 2},
        "remote": {"model_type": "other", "auto_map": {"AutoModelForCausalLM": "modeling_other.OtherForCausalLM"}},
    }.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "config.json").write_text(json.dumps(payload))
        with pytest.raises(ValueError) as error:
            Transformer.from_pretrained(directory)
        message = str(error.value)
        assert f"is a transformers model directory (model_type {payload['model_type']!r})" in message
        remote = ", trust_remote_code=True" if name == "remote" else ""
        assert f"AutoModelForCausalLM.from_pretrained({str(directory)!r}{remote})" in message
        assert "the mixture-of-tokens checkpoint it was exported from" in message
        assert "\n" not in message and message.count(". ") == 0, message


def test_exported_files_have_the_usual_mode(exported):
    """Files are readable by others as any file the user creates (0o666 less the umask, 0644 under umask 022);
    safetensors writes its temporary file with mode 0600."""
    umask = os.umask(0)
    os.umask(umask)
    directory = exported["dense"][1]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes


def test_mot_padding_takes_no_part_in_the_mix(exported):
    """MoT export: masked tokens get zero merge weight in their group (the softmax renormalised over the unmasked
    ones; an all-masked group position contributes nothing), so neither the pad id nor the contents of pad rows
    change a real row's logits; the model card says so."""
    directory = exported["mot"][1]
    model = _auto_model(directory)
    generator = torch.Generator().manual_seed(6)
    ids = torch.randint(1, 320, (8, 10), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding in the first group
    mask[2] = 0  # a pad row
    mask[5, 7:] = 0  # right padding in the second group
    mask[6:] = 0  # two pad rows: half of the second group
    results = []
    for pad_id, seed in [(0, 7), (11, 8)]:
        other = torch.randint(1, 320, ids.shape, generator=torch.Generator().manual_seed(seed))
        padded = torch.where(mask.bool(), ids, torch.where(mask.sum(1, keepdim=True) == 0, other, pad_id))
        with torch.no_grad():
            results.append(model(input_ids=padded, attention_mask=mask).logits)
    real = mask.bool()
    assert torch.isfinite(results[0]).all()
    torch.testing.assert_close(results[0][real], results[1][real], atol=1e-6, rtol=0)
    with torch.no_grad():  # a mask of ones is no mask: the package's numbers
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, model(input_ids=ids).logits
        )
    card = " ".join((directory / "README.md").read_text().split())
    assert "padded tokens (attention_mask 0) take no part in the mix" in card


def _template_module():
    """The packaged modeling_mot.py, imported as a module (it needs torch and transformers only)."""
    import importlib.util
    from importlib import resources

    path = resources.files("mixture_of_tokens.export") / "templates" / "modeling_mot.py"
    spec = importlib.util.spec_from_file_location("modeling_mot_template", str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "options",
    [
        dict(mot_routing="uniform"),
        dict(mot_routing="discrete"),
        dict(mot_emit="experts"),
        dict(mot_separate_emit_controller=True),
        dict(mot_separate_emit_controller=True, mot_routing="discrete"),
        dict(mot_routing="discrete", mot_discrete_rule="authors", mot_emit="experts"),
        dict(mot_learnable_temperature="per_expert"),
    ],
)
def test_every_mot_option_keeps_padding_out_of_the_mix(options):
    """The exported MoT layer under each option: padded tokens (also a group position with none kept) change no
    kept token's output and get a zero update themselves."""
    module = _template_module()
    config = module.MoTConfig(d_model=8, n_blocks=1, block_ffn_kinds=["mot"], group_size=4, n_experts=3, **options)
    layer = module.MixtureOfTokens(config)
    torch.manual_seed(0)
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    x = torch.randn(8, 5, 8, dtype=torch.float64)
    keep = torch.rand(8, 5) > 0.4
    keep[4:, 2] = False  # a group position with no kept token
    changed = torch.where(keep[..., None], x, torch.randn_like(x) * 3)
    with torch.no_grad():
        before, after = layer.double()(x, keep), layer(changed, keep)
    assert torch.isfinite(before).all() and torch.equal(before[~keep], torch.zeros_like(before[~keep]))
    torch.testing.assert_close(after[keep], before[keep], atol=1e-12, rtol=0)


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("rule", ["project", "authors"])
def test_the_exported_mot_layer_follows_the_discrete_rule_with_ties(emit, rule):
    """Discrete routing with forced ties (two identical rows in a group, two experts with one controller column):
    the exported layer equals the package's under either rule, with and without a mask of ones."""
    from mixture_of_tokens.layers import MixtureOfTokens

    module = _template_module()
    options = dict(mot_routing="discrete", mot_discrete_rule=rule, mot_emit=emit)
    config = module.MoTConfig(d_model=8, n_blocks=1, block_ffn_kinds=["mot"], group_size=4, n_experts=3, **options)
    exported = module.MixtureOfTokens(config).double()
    ours = MixtureOfTokens(8, n_experts=3, expert_size=512, group_size=4, routing="discrete", emit=emit,
                           discrete_rule=rule).double()  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in ours.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
        ours.controller[:, 1] = ours.controller[:, 0]
    exported.load_state_dict(ours.state_dict())
    x = torch.randn(8, 5, 8, dtype=torch.float64)
    x[1] = x[0]
    with torch.no_grad():
        expected = ours(x)
        torch.testing.assert_close(exported(x), expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(exported(x, torch.ones(8, 5, dtype=torch.bool)), expected, atol=1e-12, rtol=0)
