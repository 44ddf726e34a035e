"""Every ```python block of README.md and docs/*.md runs (README.md's in test_python_api.py): the blocks of one
file in order, in one namespace, in a fresh directory holding corpus.txt, with MOT_CACHE_DIR in a temporary folder
(doc_snippets.py). A block that cannot run here is marked `<!-- not-run: reason -->` just above it; the last test
keeps those few and explained."""

from __future__ import annotations

import pytest
from doc_snippets import DOC_FILES, ROOT, python_blocks, run_blocks, write_corpus_txt

# README.md's blocks run in test_python_api.py, which also checks what its train -> score -> generate block prints.
FILES_WITH_CODE = [path for path in DOC_FILES if python_blocks(path) and path.name != "README.md"]


@pytest.mark.parametrize("path", FILES_WITH_CODE, ids=lambda path: str(path.relative_to(ROOT)))
def test_the_python_blocks_of_a_page_run(path, tmp_path, cache_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_corpus_txt(tmp_path)
    run_blocks(python_blocks(path))
    capsys.readouterr()


def test_the_snippets_are_found_and_few_are_not_run():
    blocks = [block for path in DOC_FILES for block in python_blocks(path)]
    names = {block.path.name for block in blocks}
    assert {"README.md", "python-api.md", "layer.md", "model-and-presets.md"} <= names
    skipped = {block.name: block.not_run for block in blocks if block.not_run is not None}
    assert all(len(reason) > 10 for reason in skipped.values())
    assert len(skipped) <= len(blocks) // 4, skipped
