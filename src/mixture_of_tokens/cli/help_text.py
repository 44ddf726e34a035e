"""The one way a `mot` subcommand's --help ends: an "examples:" block of real commands, printed as written."""

from __future__ import annotations

import argparse

HEADING = "examples:"


class ExamplesFormatter(argparse.RawDescriptionHelpFormatter):
    """Prints the examples epilog as written (one command a line) and wraps the description as argparse does."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(HEADING):
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def examples(*lines: str, note: str = "") -> dict:
    """Parser keyword arguments (`add_parser(..., **examples(...))`) that end --help with `lines` as an "examples:"
    block, each indented two spaces, and an optional free-text `note` after a blank line."""
    text = HEADING + "\n" + "\n".join(f"  {line}" for line in lines)
    if note:
        text += "\n\n" + note.strip("\n")
    return {"epilog": text + "\n", "formatter_class": ExamplesFormatter}
