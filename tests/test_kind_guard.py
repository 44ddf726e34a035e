"""Knowledge of a feed-forward kind lives in its layer file: outside `layers/`, the package asks the registry or the
layer and never names a kind. A syntax-tree walk of every module outside `layers/` fails on

    kind-comparison   a comparison of a kind-valued expression (`x.ffn`, `x.kind`, a name `kind` / `ffn`,
                      `config.block_ffn_kinds()`) with a kind's name ("mot", or `MixtureOfTokens.kind`); against
                      `.ffn`, any string constant
    layer-class       an import (or attribute access) of a kind's layer class (`from .layers import TokenChoice`)
    group-size-read   a read of an attribute `.group_size` (the coupling multiple is `batch_multiple`, the
                      registry's answer; a kind's own fields are read by its layer)

Adding a kind is then one layer file and one registry line: nothing outside `layers/` can hold a second copy of
what the kind is.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mixture_of_tokens
from mixture_of_tokens.layers import FFN_REGISTRY, FeedForwardLayer

PACKAGE = Path(mixture_of_tokens.__file__).parent
KIND_VALUED_NAMES = ("kind", "ffn")
KIND_VALUED_CALLS = ("block_ffn_kinds",)

SCALING_LAW_KINDS = (
    "the scaling law's run kinds (fine-grained | dense), a vocabulary of its own that shares the word 'dense'"
)
ALLOWED: dict[tuple[str, str, str], str] = {
    ("cli/scaling.py", "kind-comparison", "config.kind == 'dense'"): SCALING_LAW_KINDS,
    ("scaling/runs.py", "kind-comparison", "kind == 'dense'"): SCALING_LAW_KINDS,
    ("cli/scaling.py", "group-size-read", "mot.group_size"): (
        "the scaling plan's MoT preset (a plan record, not a layer config) printed for the user"
    ),
    **{
        ("__init__.py", "layer-class", f"from mixture_of_tokens.layers import {name}"): (
            "the package's public API re-exports the layer classes; it uses none of them"
        )
        for name in ("ExpertChoice", "FeedForward", "MixtureOfTokens", "TokenChoice")
    },
}
"""(module, rule, source of the flagged expression) -> why it is not kind knowledge."""

EXEMPT_FOLDERS: dict[str, str] = {
    "layers/": "the kinds themselves and their registry",
    "export/templates/": (
        "a copy of the exportable layers written into a transformers export, which must run without this package"
    ),
}


def kind_classes() -> set[str]:
    """Names of the layer classes of the kinds: every registered class and every FeedForwardLayer subclass with a
    kind name."""
    found = {cls.__name__ for cls in FFN_REGISTRY.values()}
    pending = list(FeedForwardLayer.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("mixture_of_tokens.layers") and "kind" in vars(cls):
            found.add(cls.__name__)
    return found


def _absolute_module(node: ast.ImportFrom, module_name: str) -> str:
    if not node.level:
        return node.module or ""
    package_parts = module_name.split(".")[: -node.level]
    return ".".join(package_parts + ([node.module] if node.module else []))


class _KindChecker(ast.NodeVisitor):
    def __init__(self, module_name: str, kind_names: set[str], class_names: set[str]) -> None:
        self.module_name = module_name
        self.kind_names = kind_names
        self.class_names = class_names
        self.found: list[tuple[int, str, str]] = []

    def _report(self, node: ast.AST, rule: str) -> None:
        self.found.append((node.lineno, rule, ast.unparse(node)))

    def _kind_valued(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Subscript):
            return self._kind_valued(node.value)
        if isinstance(node, ast.Attribute):
            return node.attr in KIND_VALUED_NAMES
        if isinstance(node, ast.Name):
            return node.id in KIND_VALUED_NAMES
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            return name in KIND_VALUED_CALLS
        return False

    def _names_a_kind(self, node: ast.expr, *, any_string: bool) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return any_string or node.value in self.kind_names
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return any(self._names_a_kind(element, any_string=any_string) for element in node.elts)
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "kind"
            and isinstance(node.value, ast.Name | ast.Attribute)
            and (node.value.id if isinstance(node.value, ast.Name) else node.value.attr) in self.class_names
        )

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        any_string = any(isinstance(o, ast.Attribute) and o.attr == "ffn" for o in operands)
        if any(map(self._kind_valued, operands)) and any(
            self._names_a_kind(o, any_string=any_string) for o in operands
        ):
            self._report(node, "kind-comparison")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = _absolute_module(node, self.module_name)
        if module.startswith("mixture_of_tokens.layers"):
            for alias in node.names:
                if alias.name in self.class_names:
                    self.found.append((node.lineno, "layer-class", f"from {module} import {alias.name}"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in self.class_names:
            self._report(node, "layer-class")
        elif node.attr == "group_size" and isinstance(node.ctx, ast.Load):
            self._report(node, "group-size-read")
        self.generic_visit(node)


def check_source(source: str, module_name: str = "mixture_of_tokens.example") -> list[tuple[int, str, str]]:
    """(line, rule, source) of every place in `source` that knows a kind."""
    checker = _KindChecker(module_name, set(FFN_REGISTRY), kind_classes())
    checker.visit(ast.parse(source))
    return sorted(checker.found)


def package_offenders() -> list[str]:
    """`module:line: rule: source` of every place outside layers/ (and the exempt folders) that knows a kind."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(tuple(EXEMPT_FOLDERS)):
            continue
        module_name = "mixture_of_tokens." + relative.removesuffix(".py").replace("/", ".")
        for line, rule, source in check_source(path.read_text(), module_name):
            if (relative, rule, source) not in ALLOWED:
                offenders.append(f"{relative}:{line}: {rule}: {source}")
    return offenders


def test_no_module_outside_layers_knows_a_kind():
    assert package_offenders() == []


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ('if config.kind == "mot":\n    pass', "kind-comparison"),
        ('use = config.ffn in ("token_choice", "expert_choice")', "kind-comparison"),
        ('grouped = config.ffn != "anything"', "kind-comparison"),
        ('has_mot = "mot" in config.block_ffn_kinds()', "kind-comparison"),
        ("for kind in config.block_ffn_kinds():\n    skip = kind == 'dense'", "kind-comparison"),
        ("from mixture_of_tokens.layers import MixtureOfTokens", "layer-class"),
        ("from ..layers.token_choice import TokenChoice", "layer-class"),
        ("from ..layers import ExpertChoice as EC", "layer-class"),
        ("import mixture_of_tokens.layers as L\nlayer = L.FeedForward", "layer-class"),
        ("rows = config.group_size", "group-size-read"),
        ("rows = policy.group_size * 2", "group-size-read"),
    ],
)
def test_the_checker_reports_a_planted_kind_use(source, rule):
    assert [found_rule for _, found_rule, _ in check_source(source, "mixture_of_tokens.cli.example")] == [rule]


@pytest.mark.parametrize(
    "source",
    [
        'if doc.kind == "greedy":\n    pass',  # another vocabulary's "kind"
        "multiple = batch_multiple(config)",
        'config = replace(base, ffn="mot", ffn_blocks="all")',  # choosing a kind, as a user does with --ffn
        "layer = layer_class(config.ffn)",
        "from mixture_of_tokens.layers import FeedForwardLayer, batch_multiple",
        "self.group_size = 4",  # a field of one's own, written
        "mot_mode(model, group_size=8)",
    ],
)
def test_the_checker_lets_kind_free_code_pass(source):
    assert check_source(source, "mixture_of_tokens.cli.example") == []
