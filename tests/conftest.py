"""Fixtures shared by the test modules. Plain helpers live beside this file: helpers.py (tolerances, tiny configs,
layer factories, the evaluation checkpoint), corpus.py (text corpora on disk), reference.py and
reference_sparse.py (float64 plain-loop references of the layers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


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
