"""Fixtures shared by the test modules. Plain helpers live beside this file: helpers.py (tolerances, tiny configs,
layer factories, the evaluation checkpoint), corpus.py (text corpora on disk), reference.py and
reference_sparse.py (float64 plain-loop references of the layers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import write_corpus
from helpers import tiny_model_config, tiny_train_config

from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.training.loop import Trainer


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MOT_CACHE_DIR pointed at this test's own folder, so tokenizers and token files stay out of the user's cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("MOT_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="module")
def module_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MOT_CACHE_DIR pointed at one folder for a whole test module, so its token files are built once."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOT_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, module_cache_dir: Path) -> dict:
    """A 20-document grammar corpus as a `text:` source and its prepared data (BPE of 300 tokens), once a module."""
    source = f"text:{write_corpus(tmp_path_factory.mktemp('corpus') / 'docs', n_documents=20)}"
    return {"source": source, "data": prepare_data(source, vocab_size=300, progress=False)}


@pytest.fixture
def trainer_factory(corpus: dict, tmp_path: Path):
    """Trainer of the tiny model on `corpus` in tmp_path/run; keyword arguments override the TrainConfig and
    `model_overrides` the ModelConfig."""

    def make(model_overrides: dict | None = None, **overrides) -> Trainer:
        config = tiny_train_config(corpus["source"], tmp_path / "run", **overrides)
        return Trainer(tiny_model_config(**(model_overrides or {})), config, data=corpus["data"], progress=False)

    return make
