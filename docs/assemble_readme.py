"""Assemble README.md from the section files in docs/ (run after editing a section: python docs/assemble_readme.py)."""

from pathlib import Path

SECTIONS = ["core.md", "data.md", "sparse-baselines.md", "evaluation.md", "transition.md", "scaling.md", "tail.md"]
here = Path(__file__).parent
parts = [(here / name).read_text().strip() for name in SECTIONS]
(here.parent / "README.md").write_text(
    "\n\n".join(parts).replace("\n<!-- generated -->", "")
    + "\n\n<!-- README.md is assembled from docs/*.md by docs/assemble_readme.py -->\n"
)
