"""Exports of a checkpoint to other libraries: `hf` (a transformers directory: a native architecture for the
Llama-style dense and Token Choice models, remote code loaded with trust_remote_code for the others)."""

from .hf import EXPORTABLE_KINDS, ExportResult, check_exportable, export_hf
from .native import NATIVE_ARCHITECTURES, native_problem, native_target

__all__ = [
    "EXPORTABLE_KINDS", "NATIVE_ARCHITECTURES", "ExportResult", "check_exportable", "export_hf", "native_problem",
    "native_target",
]  # fmt: skip
