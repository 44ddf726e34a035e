"""Optional dependencies: every extra is declared, the test extra brings what the suite tests for real, and a
missing package is one sentence naming the install, raised before any data or compute."""

from __future__ import annotations

import sys

import pytest
from doc_snippets import ROOT

from mixture_of_tokens.data import streaming
from mixture_of_tokens.evaluation import lm_eval_adapter
from mixture_of_tokens.extras import EXTRAS, MissingExtra, require

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")


def test_every_extra_is_declared_and_the_test_extra_has_what_the_tests_use():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) | {"all", "test"} == set(extras)
    names = {extra: {spec.split(">")[0].split("=")[0].strip() for spec in specs} for extra, specs in extras.items()}
    assert {"lm_eval", "transformers", "datasets", "tensorboard"} <= names["test"]
    everything_but_eval = ("tensorboard", "c4", "hf", "lm-eval", "yaml")  # eval installs with --no-deps
    assert names["all"] == set().union(*(names[extra] for extra in everything_but_eval))
    for extra, package in EXTRAS.items():
        assert package in names[extra]
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH_SPEC ?= torch==2.13.0" in makefile and '-e ".[test]" "$(TORCH_SPEC)"' in makefile


def test_a_missing_package_is_one_sentence_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(MissingExtra) as caught:
        require("transformers", "hf", purpose="mot export --to hf")
    message = str(caught.value)
    assert message == (
        "mot export --to hf needs the optional package transformers, which is not installed: "
        "pip install 'mixture-of-tokens[hf]'."
    )
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, ValueError)
    assert require("json", "hf").dumps([]) == "[]"
    with pytest.raises(ValueError, match="extra='gpu' is not declared"):
        require("json", "gpu")


@pytest.mark.parametrize(
    "module, extra, call",
    [
        ("lm_eval", "lm-eval", lm_eval_adapter.register),
        ("datasets", "c4", streaming.import_datasets),
    ],
)
def test_lm_eval_and_c4_ask_for_their_extra(monkeypatch, module, extra, call):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=f"pip install 'mixture-of-tokens\\[{extra}\\]'"):
        call()
