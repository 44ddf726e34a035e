"""Run a suite's trainings: the learning-rate sweep (seed 0 at every rate of the size), then the other seeds at
each arm's best rate. A finished run (summary.json) is skipped, a half-finished one resumes from its newest
checkpoint, one stopped before its first checkpoint starts again (the old directory moved aside), and one that
stopped on a non-finite loss is recorded as diverged and not retried. `parallel` runs N trainings at once, each
in its own process with cores / N torch threads.

Layout: DIR/runs/ARM-lrLR-sSEED/ (one run directory each) and DIR/runs/NAME.diverged.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import CONFIG_FILE, read_config
from ..config import ModelConfig, TrainConfig
from ..config_renames import renamed_settings
from ..data import PreparedData, prepare_data
from ..training.errors import TrainingStopped
from ..training.loop import train
from ..training.run_files import final_loss, is_finished, read_summary
from ..training.state import resolve_resume_checkpoint
from .planner import DIVERGED_SUFFIX, RUNS_DIR, SuitePlan, disk_outcome, plan_suite, run_name
from .suites import Arm, Size, Suite

IGNORED_TRAIN_FIELDS = frozenset({"out_dir", "device", "threads", "checkpoint_every", "keep_checkpoints"})
"""Settings that do not change what a run computes: a finished run with other values here is reused."""
IGNORED_MODEL_FIELDS = frozenset({"vocab_size"})
"""The tokenizer sets the vocabulary (a small corpus may give fewer tokens than asked)."""


@dataclass(frozen=True)
class RunSpec:
    """One training of a suite."""

    arm: str
    lr: float
    seed: int
    model: ModelConfig
    train: TrainConfig

    @property
    def name(self) -> str:
        return run_name(self.arm, self.lr, self.seed)

    @property
    def run_dir(self) -> Path:
        return Path(self.train.out_dir)


@dataclass(frozen=True)
class RunOutcome:
    spec: RunSpec
    action: str
    """skipped (finished before) | trained | resumed | restarted | diverged (now or before)"""
    final_eval_loss: float | None = None
    seconds: float = 0.0
    message: str = ""


def arm_spec(arm: Arm, size: Size, lr: float, seed: int, out: Path, **train_fields: Any) -> RunSpec:
    """The run of `arm` (its settings resolved) at `lr` and `seed`, writing into out/runs/NAME."""
    model = arm.model_config(size.base_model())
    directory = Path(out) / RUNS_DIR / run_name(arm.name, lr, seed)
    fields = {**arm.train_fields(size.steps), **train_fields, "out_dir": str(directory)}
    return RunSpec(arm.name, lr, seed, model, size.train_config(lr=lr, seed=seed, **fields))


def config_difference(spec: RunSpec, saved: dict[str, Any]) -> str | None:
    """The first setting in which the run directory's config.json differs from `spec` (None: the same run)."""
    for section, wanted, ignored in (
        ("model", dataclasses.asdict(spec.model), IGNORED_MODEL_FIELDS | switched_model_fields(spec)),
        ("train", dataclasses.asdict(spec.train), IGNORED_TRAIN_FIELDS),
    ):
        recorded = renamed_settings(saved.get(section, {}))  # a setting saved under its old name is compared too
        for key, value in wanted.items():
            if key not in ignored and key in recorded and recorded[key] != value:
                return f"{section}.{key} = {recorded[key]!r} there, {value!r} in the suite"
    return None


def switched_model_fields(spec: RunSpec) -> set[str]:
    """A run that switches kinds mid-way may record its model after the switch: its routing fields may differ."""
    return {"ffn"} if getattr(spec.train, "switch_to", "") else set()


SUITE_REMEDY = "a suite reuses only its own runs: choose another --out or move that directory away."


def run_state(spec: RunSpec, *, remedy: str = SUITE_REMEDY) -> tuple[str, str]:
    """(state, detail): new | finished | resume | restart | diverged, checked against the spec's settings; a run
    of other settings is refused with `remedy` as the way out."""
    directory = spec.run_dir
    diverged = directory.with_name(directory.name + DIVERGED_SUFFIX)
    if diverged.exists():
        return "diverged", json.loads(diverged.read_text()).get("message", "")
    if not directory.is_dir() or not any(directory.iterdir()):
        return "new", ""
    if (directory / CONFIG_FILE).exists():
        difference = config_difference(spec, read_config(directory))
        if difference is not None:
            raise ValueError(f"{directory} holds a run of other settings ({difference}); {remedy}")
    if is_finished(directory):
        return "finished", ""
    try:
        checkpoint, _ = resolve_resume_checkpoint(directory)
    except ValueError as error:
        return "restart", str(error)
    return "resume", str(checkpoint)


def execute(spec: RunSpec, *, data: PreparedData | None = None, progress: bool = False) -> RunOutcome:
    """Skip, resume, restart or start one run; a run stopped by a non-finite loss is recorded as diverged."""
    state, detail = run_state(spec)
    if state in ("finished", "diverged"):
        loss = final_loss(read_summary(spec.run_dir)) if state == "finished" else None
        return RunOutcome(spec, "skipped" if state == "finished" else "diverged", loss, message=detail)
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"run_name": spec.name, "data": data, "progress": progress}
    try:
        if state == "resume":
            result = train(spec.model, spec.train, resume_from=spec.run_dir, **kwargs)
        else:
            result = train(spec.model, spec.train, force=state == "restart", **kwargs)
    except TrainingStopped as error:
        marker = spec.run_dir.with_name(spec.run_dir.name + DIVERGED_SUFFIX)
        marker.write_text(json.dumps({"run": spec.name, "message": str(error)}, indent=2))
        return RunOutcome(spec, "diverged", None, time.perf_counter() - started, str(error))
    if result.stopped_early:
        raise KeyboardInterrupt
    action = {"resume": "resumed", "restart": "restarted"}.get(state, "trained")
    return RunOutcome(spec, action, result.final_eval_loss, time.perf_counter() - started, detail)


_WORKER_DATA: dict[tuple[str, int, str], PreparedData] = {}


def execute_in_worker(spec: RunSpec) -> RunOutcome:
    """A subprocess's run: its prepared data is read from the cache once per process."""
    key = (spec.train.data, spec.model.vocab_size, spec.train.tokenizer)
    if key not in _WORKER_DATA:
        _WORKER_DATA[key] = prepare_data(key[0], vocab_size=key[1], tokenizer=key[2], progress=False)
    return execute(spec, data=_WORKER_DATA[key])


class _InProcess(Executor):
    """Runs each submitted call at once, in this process (parallel = 1)."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:  # type: ignore[override]
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            future.set_exception(error)
        return future


@dataclass
class SuiteRun:
    """What `run_suite` did: every outcome, the learning rate chosen per arm and the wall-clock."""

    suite: Suite
    size: Size
    out: Path
    outcomes: list[RunOutcome]
    best_lr: dict[str, float | None]
    seconds: float
    parallel: int
    device: str


def current_plan(suite: Suite, size: Size, out: Path) -> SuitePlan:
    """The suite's plan given the runs under out/runs as they are now."""
    runs = Path(out) / RUNS_DIR
    return plan_suite(suite, size, lambda arm, lr, seed: disk_outcome(runs / run_name(arm.name, lr, seed)))


def suite_specs(suite: Suite, size: Size, out: Path, device: str, threads: int) -> list[RunSpec]:
    """Every run the plan wants so far (seed-0 runs first), as specs."""
    plan = current_plan(suite, size, out)
    return [arm_spec(r.arm, size, r.lr, r.seed, out, device=device, threads=threads) for r in plan.runs]


def threads_per_run(parallel: int) -> int:
    """Torch threads for each of `parallel` runs training at once: the cores shared out (at least one); 0 (torch's
    own default) for a single run."""
    return max((os.cpu_count() or 1) // parallel, 1) if parallel > 1 else 0


def run_suite(
    suite: Suite,
    size: Size,
    out: Path,
    *,
    device: str = "auto",
    parallel: int = 1,
    progress: bool = False,
    say: Callable[[str], None] = print,
) -> SuiteRun:
    """Train (or skip, or resume) every run of `suite` at `size` under `out`; the data is prepared once here.
    After every finished run the plan is read again from disk (`planner.py`), so the runs that depend on it
    (further seeds, widened rates, arms at another arm's rate or setting) join the queue as soon as they can."""
    if parallel < 1:
        raise ValueError(f"--parallel must be a positive integer, got {parallel}.")
    out = Path(out)
    threads = size.threads or threads_per_run(parallel)
    for spec in suite_specs(suite, size, out, device, threads):  # every conflict is found before any training
        run_state(spec)
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    data = prepare_data(size.data, vocab_size=size.vocab_size, progress=progress)
    started = time.perf_counter()
    outcomes: list[RunOutcome] = []
    seen: set[str] = set()
    queue: deque[RunSpec] = deque()
    if parallel > 1:
        import multiprocessing

        executor: Executor = ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"))
    else:
        executor = _InProcess()
    running: dict[Future, RunSpec] = {}

    def refill() -> bool:
        """Queue the runs the plan now wants that were not queued before; True when the plan is complete."""
        plan = current_plan(suite, size, out)
        for planned in plan.runs:
            spec = arm_spec(planned.arm, size, planned.lr, planned.seed, out, device=device, threads=threads)
            if spec.name not in seen:
                run_state(spec)
                seen.add(spec.name)
                queue.append(spec)
        return plan.complete

    try:
        complete = refill()
        while queue or running:
            while queue and len(running) < parallel:
                spec = queue.popleft()
                future = (
                    executor.submit(execute, spec, data=data, progress=progress)
                    if parallel == 1
                    else executor.submit(execute_in_worker, spec)
                )
                running[future] = spec
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                outcomes.append(future.result())
            complete = refill()
            first = len(outcomes) - len(done)
            for index, outcome in enumerate(outcomes[first:], start=first + 1):
                say(_describe(outcome, index, len(seen), complete))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    plan = current_plan(suite, size, out)
    best = {name: p.chosen for name, p in plan.arms.items()}
    return SuiteRun(suite, size, out, outcomes, best, time.perf_counter() - started, parallel, device)


def _describe(outcome: RunOutcome, index: int, total: int, complete: bool = True) -> str:
    loss = f"eval loss {outcome.final_eval_loss:.4f}" if outcome.final_eval_loss is not None else "no eval loss"
    timing = f" in {outcome.seconds:.0f} s" if outcome.seconds else ""
    note = f" ({outcome.message})" if outcome.action == "diverged" and outcome.message else ""
    return f"[{index}/{total}{'' if complete else '+'}] {outcome.spec.name}: {outcome.action}, {loss}{timing}{note}"
