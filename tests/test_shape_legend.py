"""One shape-letter legend for the whole package: tensor names carry their axes as a suffix (`x_BSD`, `keep_RG1`),
and every letter of such a suffix is one of the legend's, read from the docstring of `mixture_of_tokens.layers` (so
the legend and this test cannot drift apart).

A syntax-tree walk of every module under src/mixture_of_tokens and benchmarks/ looks at each name (variables,
arguments, attributes, keyword arguments) whose stem has a lowercase letter and ends in `_` plus 1-6 capitals or
digits (`x_ND`, `targets_N`, `terms_R3`), and fails on one with a character the legend does not list. Constants
(`GPT2_EOS_ID`, `os.O_RDONLY`) have no lowercase stem and are not shape names.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import mixture_of_tokens
import mixture_of_tokens.layers

PACKAGE = Path(mixture_of_tokens.__file__).parent
BENCHMARKS = PACKAGE.parents[1] / "benchmarks"

SHAPE_NAME = re.compile(r"^(?P<stem>.*[a-z].*)_(?P<axes>[A-Z0-9]{1,6})$")
LEGEND_ENTRY = re.compile(r"(?:^ {4}| {2,})(?P<letter>[A-Z0-9]) (?=[a-z(])")

EXEMPT_MODULES: dict[str, str] = {
    "scaling/fit.py": (
        "the scaling law's formula variables, not tensor axes: log_N (parameters), log_D (tokens), log_L (loss), and "
        "numpy arrays over R runs and P fitted parameters with fixed-size term axes (terms_R3, share_R2)"
    ),
}
"""Module (relative to the package) -> why its names are not held to the legend."""


def legend_letters(doc: str | None = None) -> list[str]:
    """The letters of the axis legend, in order: one per indented entry ("    B batch    S sequence position") of
    the block that follows the "Axis legend" line of `mixture_of_tokens.layers`' docstring."""
    lines = (doc if doc is not None else mixture_of_tokens.layers.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Axis legend"))
    letters: list[str] = []
    in_block = False
    for line in lines[start + 1 :]:
        if line.startswith("    "):
            in_block = True
            letters += [match["letter"] for match in LEGEND_ENTRY.finditer(line)]
        elif in_block:
            break
    return letters


def _names(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, node.arg))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.keyword) and node.arg is not None:
            found.append((node.lineno, node.arg))
    return found


def check_source(source: str, letters: set[str] | None = None) -> list[tuple[int, str, str]]:
    """(line, name, letters outside the legend) of every shape-suffixed name in `source` that uses such a letter."""
    allowed = set(legend_letters()) if letters is None else letters
    offenders = set()
    for line, name in _names(ast.parse(source)):
        match = SHAPE_NAME.match(name)
        if match is None or not re.search("[A-Z]", match["axes"]):
            continue
        unknown = "".join(sorted(set(match["axes"]) - allowed))
        if unknown:
            offenders.add((line, name, unknown))
    return sorted(offenders)


def modules() -> list[tuple[str, Path]]:
    """(name shown in a failure, path) of every module the legend covers: the package's and the benchmarks'."""
    found = [(path.relative_to(PACKAGE).as_posix(), path) for path in sorted(PACKAGE.rglob("*.py"))]
    found += [(f"benchmarks/{path.name}", path) for path in sorted(BENCHMARKS.glob("*.py"))]
    return found


def test_the_legend_gives_each_letter_one_meaning():
    letters = legend_letters()
    assert {"B", "S", "D", "V", "N", "L", "M", "W", "E", "H", "K", "G", "R"} <= set(letters)
    assert sorted(letter for letter in set(letters) if letters.count(letter) > 1) == []


def test_every_shape_name_uses_the_legend_letters():
    letters = set(legend_letters())
    offenders = [
        f"{module}:{line}: {name} (not in the legend: {unknown})"
        for module, path in modules()
        if module not in EXEMPT_MODULES
        for line, name, unknown in check_source(path.read_text(), letters)
    ]
    assert offenders == [], "tensor names with letters outside the legend of mixture_of_tokens/layers/__init__.py"


def test_exempt_modules_exist():
    assert [module for module in EXEMPT_MODULES if not (PACKAGE / module).is_file()] == []


@pytest.mark.parametrize(
    ("source", "name", "unknown"),
    [
        ("hidden_NX = x", "hidden_NX", "X"),  # a letter with no meaning in the legend
        ("def attend(keys_BQLW):\n    return keys_BQLW", "keys_BQLW", "Q"),  # an argument (and its read)
        ("self.cache_BZLW = None", "cache_BZLW", "Z"),  # an attribute target
        ("targets_Y = labels.flatten()", "targets_Y", "Y"),  # one capital after a lowercase stem
        ("scores = run(mask_SJ=None)", "mask_SJ", "J"),  # a keyword argument
        ("terms_R3 = np.stack(parts, axis=1)", "terms_R3", "3"),  # a fixed-size axis is not a legend letter
    ],
)
def test_the_checker_reports_a_planted_name(source, name, unknown):
    assert {(found, letters) for _, found, letters in check_source(source)} == {(name, unknown)}


@pytest.mark.parametrize(
    "source",
    [
        "x_BSD = block(x_BSD)",
        "keep_RG1 = keep_BS[:, :, None]",  # 1: a kept axis of size 1
        "q_BMSW, k_BMLW = attend(qkv_BSF)",
        "GPT2_EOS_ID = 50256",  # a constant, not a shape name
        "flags = os.O_RDONLY",
        "hidden_size = config.d_model",
    ],
)
def test_the_checker_lets_legend_names_pass(source):
    assert check_source(source) == []


def test_the_legend_parser_reads_entries_not_prose():
    doc = "Intro.\n\nAxis legend:\n    B batch    S sequence\n      continued, with R*C in prose\n    Q quirk\nAfter.\n"
    assert legend_letters(doc) == ["B", "S", "Q"]
