"""`mot export --to hf`: a checkpoint as a directory that transformers loads.

A model in the Llama-style block whose blocks are dense or Token Choice is written natively, as the transformers
architecture it is (LlamaForCausalLM, Qwen3ForCausalLM, Qwen2MoeForCausalLM, Qwen3MoeForCausalLM: export/native.py),
by transformers' own save_pretrained, and loads without remote code. Any other model (MoT in either block, the paper's
GPT-2-like block, a block mixing the two styles) is written as remote code, loaded with `trust_remote_code=True`:

    config.json          model_type, auto_map (AutoConfig, AutoModelForCausalLM -> modeling_mot.py), the settings
    modeling_mot.py      the model in plain PyTorch (dense, MoT, Token Choice blocks; every block option: positions,
                         norm, activation, kv heads, query/key norms, biases); no import of this package
    model.safetensors    the weights, under the same names as this package's model (a tied head stored twice)
    tokenizer.json, tokenizer_config.json   a PreTrainedTokenizerFast (the trained BPE, or GPT-2 rebuilt)
    README.md            the model card: what it is, how to load it, MoT's batch rule

Everything is written under a temporary name beside the destination; before it is renamed into place the copy is
loaded with transformers and its logits are checked against this package's model on the same ids (float32), so a
directory that does not reproduce the model is never left behind.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_weights_into,
    read_config,
    read_weights,
    save_weights,
    saved_configs,
)
from ..config import ModelConfig
from ..data import Tokenizer
from ..evaluation.runner import load_checkpoint
from ..extras import require
from ..files import usual_file_mode, write_text_atomic
from ..layers import batch_multiple
from ..layers.mot_options import trained_temperature
from ..model import Transformer, set_inference_routing
from ..runtime.devices import resolve_device
from .model_card import model_card, native_model_card
from .native import (
    NativeTarget,
    native_problem,
    native_target,
    quiet_transformers,
    write_native,
)
from .tokenizer_files import write_tokenizer_files

__all__ = [
    "EXPORTABLE_KINDS", "ExportResult", "check_exportable", "export_hf", "hf_config", "load_export",
    "transformers_config",
]  # fmt: skip

MODELING_FILE = "modeling_mot.py"
TOLERANCE = 1e-5
"""Largest allowed |logit difference| between the exported model in transformers and this package's (float32)."""


@dataclass
class ExportResult:
    directory: Path
    files: list[str]
    max_abs_diff: float
    checked_shape: tuple[int, int]
    architecture: str = "MoTForCausalLM"
    """The transformers class written: a native one, or MoTForCausalLM (remote code)."""
    native_problem: str | None = None
    """Why the model has no native architecture (None when it was written natively)."""

    @property
    def native(self) -> bool:
        return self.native_problem is None


def _template() -> str:
    return (resources.files("mixture_of_tokens.export") / "templates" / MODELING_FILE).read_text(encoding="utf-8")


def _template_constant(name: str) -> Any:
    """A literal the modeling file defines (it is self-contained, so it names its kinds and settings itself)."""
    for node in ast.parse(_template()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"the packaged {MODELING_FILE} has no {name}; reinstall mixture-of-tokens.")


EXPORTABLE_KINDS: tuple[str, ...] = tuple(_template_constant("FFN_KINDS"))
_SETTINGS: tuple[str, ...] = tuple(_template_constant("SETTINGS"))
"""The settings the modeling file reads: ModelConfig fields (the rest shape training only), and experts_per_token."""


def check_exportable(config: ModelConfig) -> None:
    """One sentence, before any work, for a model that is neither native nor implemented by the exported file."""
    if config.objective != "causal":
        raise ValueError(
            f"mot export --to hf writes causal language models; this checkpoint has objective={config.objective!r}."
        )
    if native_target(config) is not None:
        return
    kinds = config.block_ffn_kinds()
    unsupported = sorted(set(kinds) - set(EXPORTABLE_KINDS))
    if unsupported:
        raise ValueError(
            f"mot export --to hf does not export {', '.join(unsupported)} layers; exportable kinds: "
            f"{', '.join(EXPORTABLE_KINDS)}."
        )


def hf_config(config: ModelConfig, tokenizer: Tokenizer, dtype: torch.dtype) -> dict[str, Any]:
    """config.json of the exported model."""
    fields = dataclasses.asdict(config)
    exported = {name: fields[name] for name in _SETTINGS if name != "experts_per_token"}
    # a temperature schedule ends at its final tau: the fixed tau the trained model (and load_model) computes with
    exported["mot_temperature"] = trained_temperature(
        config.mot_temperature, config.mot_temperature_schedule, config.mot_temperature_final
    )
    return {
        "model_type": "mixture_of_tokens",
        "architectures": ["MoTForCausalLM"],
        "auto_map": {
            "AutoConfig": f"{MODELING_FILE[:-3]}.MoTConfig",
            "AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.MoTForCausalLM",
        },
        **exported,
        "experts_per_token": config.tc_top_k,  # top_k would name a generation setting in transformers
        "block_ffn_kinds": config.block_ffn_kinds(),
        "bos_token_id": tokenizer.eos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.eos_id,
        "tie_word_embeddings": False,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "mixture_of_tokens": {"model_config": fields},
    }


def export_hf(checkpoint: Path | str, out: Path | str, *, force: bool = False) -> ExportResult:
    """Write the transformers directory of `checkpoint` to `out` (refused if it exists, unless `force`)."""
    require("transformers", "hf", purpose="mot export --to hf")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"--out {out} already exists; choose another directory or pass --force to replace it.")
    if Path(checkpoint).is_dir():  # refuse what cannot be exported before reading any weights
        check_exportable(saved_configs(read_config(Path(checkpoint)))[0])
    loaded = load_checkpoint(checkpoint, "cpu")
    config = loaded.model_config
    check_exportable(config)
    target = native_target(config)
    partial = out.parent / f"{out.name}-partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with quiet_transformers():
        if target is not None:
            return _export_native(loaded, target, partial, out)
        return _export_remote(loaded, partial, out)


def _export_remote(loaded: Any, partial: Path, out: Path) -> ExportResult:
    """The remote-code export (modeling_mot.py and this package's weights) into `partial`, checked, then renamed to
    `out`."""
    model, config = loaded.model, loaded.model_config
    try:
        dtype = next(model.parameters()).dtype
        write_text_atomic(partial / CONFIG_FILE, json.dumps(hf_config(config, loaded.tokenizer, dtype), indent=2))
        write_text_atomic(partial / MODELING_FILE, _template())
        weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}  # tied head: own copy
        save_weights(weights, partial / WEIGHTS_FILE)
        files = [CONFIG_FILE, MODELING_FILE, WEIGHTS_FILE]
        files += write_tokenizer_files(loaded.tokenizer, partial, max_length=config.max_seq_len)
        write_text_atomic(partial / "README.md", model_card(config, loaded.tokenizer, loaded.directory))
        files.append("README.md")
        difference, shape = _check_and_place(partial, out, model, trust_remote_code=True)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ExportResult(out, files, difference, shape, native_problem=native_problem(config))


def _export_native(loaded: Any, target: NativeTarget, partial: Path, out: Path) -> ExportResult:
    """The native export (export/native.py) into `partial`, checked, then renamed to `out`."""
    model, config = loaded.model, loaded.model_config
    try:
        weights = {name: tensor.detach() for name, tensor in model.state_dict().items()}
        files = write_native(weights, config, loaded.tokenizer, partial, target)
        files += write_tokenizer_files(loaded.tokenizer, partial, max_length=config.max_seq_len)
        write_text_atomic(partial / "README.md", native_model_card(config, loaded.tokenizer, loaded.directory, target))
        files.append("README.md")
        difference, shape = _check_and_place(partial, out, model, trust_remote_code=False)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return ExportResult(out, sorted(dict.fromkeys(files)), difference, shape, architecture=target.architecture)


def _check_and_place(partial: Path, out: Path, model: Any, *, trust_remote_code: bool) -> tuple[float, Any]:
    """Check the written export against the model, give its files the usual modes and rename it into place."""
    difference, shape = check_export(partial, model, trust_remote_code=trust_remote_code)
    usual_file_modes(partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return difference, shape


def check_export(
    directory: Path, model: Transformer, seed: int = 0, *, trust_remote_code: bool = True
) -> tuple[float, tuple[int, int]]:
    """Load `directory` with transformers and compare its logits with `model`'s (cast to float32 in place) on
    random ids: the largest absolute difference, and the [rows, positions] compared. Fails past TOLERANCE."""
    from transformers import AutoModelForCausalLM

    config = model.config
    rows = 2 * batch_multiple(config)  # two groups when rows couple (MoT)
    shape = (rows, min(16, config.max_seq_len))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, shape, generator=generator)
    exported = AutoModelForCausalLM.from_pretrained(
        str(directory), trust_remote_code=trust_remote_code, dtype=torch.float32
    )
    with torch.no_grad():
        expected = model.float()(ids).logits  # the loaded copy: eval mode, inference routing
        got = exported.eval()(input_ids=ids).logits
    difference = float((got.float() - expected.float()).abs().max())
    if not difference <= TOLERANCE:
        raise ValueError(
            f"the exported model's logits differ from this package's by {difference:.3g} (> {TOLERANCE}) on "
            f"{shape[0]} x {shape[1]} random ids; the export was not written (please report it)."
        )
    return difference, shape


def usual_file_modes(directory: Path) -> None:
    """Give every file of `directory` the mode a newly created file gets (`files.usual_file_mode`: 0644 under umask
    022); safetensors, directly or through transformers' save_pretrained, leaves model.safetensors at 0600."""
    for path in directory.iterdir():
        if path.is_file():
            usual_file_mode(path)


def transformers_config(directory: Path | str) -> dict[str, Any] | None:
    """config.json of a transformers model directory (one with a model_type and no checkpoint's "model"
    section), or None for anything else (a checkpoint, a run, a missing or unreadable file)."""
    try:
        payload = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(payload, dict) and isinstance(payload.get("model_type"), str) and "model" not in payload:
        return payload
    return None


def load_export(
    directory: Path | str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Transformer:
    """This package's model from a `mot export --to hf` directory: the ModelConfig recorded in config.json
    (`mixture_of_tokens.model_config`) and the weights of model.safetensors (this package's names), in eval mode
    with inference routing, on `device` in `dtype` (default float32). Another transformers model is refused in
    one sentence naming the call that loads it."""
    directory = Path(directory)
    payload = transformers_config(directory) or {}
    recorded = payload.get("mixture_of_tokens", {})
    if payload.get("model_type") != "mixture_of_tokens" or "model_config" not in recorded:
        remote = ", trust_remote_code=True" if "auto_map" in payload else ""
        raise ValueError(
            f"{directory} is a transformers model directory (model_type {payload.get('model_type')!r}) whose weights "
            "are not under this package's names; load it with AutoModelForCausalLM.from_pretrained("
            f"{str(directory)!r}{remote}), or give Transformer.from_pretrained the mixture-of-tokens checkpoint it "
            "was exported from."
        )
    config = ModelConfig(**recorded["model_config"])
    model = Transformer(config)
    load_weights_into(model, read_weights(directory / WEIGHTS_FILE))  # a tied head is stored twice: same values
    torch_device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    model = set_inference_routing(model.to(torch_device, dtype)).eval()
    model.name_or_path = str(directory)
    return model
