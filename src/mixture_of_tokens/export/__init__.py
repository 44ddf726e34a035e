"""Exports of a checkpoint to other libraries: `hf` (a transformers directory loaded with trust_remote_code)."""

from .hf import EXPORTABLE_KINDS, ExportResult, check_exportable, export_hf

__all__ = ["EXPORTABLE_KINDS", "ExportResult", "check_exportable", "export_hf"]
