"""The lock of a run directory: one training at a time writes into it.

The process that trains into a run directory (rank 0 under torchrun) holds an OS advisory lock (`fcntl.flock`)
on RUN_DIR/.mot-run.lock from before its data is prepared until it exits. The OS drops the lock when the process
ends in any way (an exception, Ctrl-C, kill -9), so a lock file left behind by a killed run never blocks the
next one. A second training, `--resume`, `--force`, `mot convert` or `mot export` into a locked directory is
refused with one sentence naming the holder's pid. Platforms without `fcntl` (Windows) are not locked.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the directory checks still apply
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".mot-run.lock"


class RunDirectoryInUse(FileExistsError):
    """A training holds the directory's lock; the message names its pid and what to do."""


def in_use_message(directory: Path, pid: str, hint: str) -> str:
    return f"{directory} is in use by another training (pid {pid}); {hint}"


def _holder_pid(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


def training_pid(directory: Path) -> str | None:
    """The pid of the training that holds `directory`'s lock, or None when none does (a probe: creates nothing)."""
    path = Path(directory) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_pid(path)
    finally:
        os.close(fd)  # closing drops the probe's own lock at once
    return None


def check_not_in_use(directory: Path, hint: str) -> None:
    """Fail with one sentence (RunDirectoryInUse) when a training holds `directory`'s lock."""
    pid = training_pid(directory)
    if pid is not None:
        raise RunDirectoryInUse(in_use_message(Path(directory), pid, hint))


class RunLock:
    """The lock a training holds on its run directory; `release` is safe to call more than once."""

    def __init__(self, hint: str = "wait for it to finish, or choose another run directory.") -> None:
        self.hint = hint
        self.directory: Path | None = None
        self._fd: int | None = None
        self._created: list[Path] = []  # the directories acquire made, deepest first

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, directory: Path) -> None:
        """Lock `directory` (created if missing) or fail with RunDirectoryInUse; nothing else is written."""
        directory = Path(directory)
        missing = directory
        while not missing.exists() and missing != missing.parent:
            self._created.append(missing)
            missing = missing.parent
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        if fcntl is None:
            return
        try:
            self._fd = self._lock_file(directory / LOCK_FILE)
        except BaseException:
            self.release()
            raise

    def _lock_file(self, path: Path) -> int:
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirectoryInUse(in_use_message(path.parent, _holder_pid(path), self.hint)) from None
            if _same_file(path, fd):  # not removed by a holder releasing it between our open and flock
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def move_to(self, directory: Path, *, moved_to: Path) -> None:
        """Lock `directory` instead, after the held directory, lock file and all, was renamed to `moved_to` (an old
        run moved aside); the old lock is released and its file removed only once the new one is held."""
        old_fd = self._fd
        self._fd, self._created = None, []
        try:
            self.acquire(directory)
        finally:
            if old_fd is not None:
                _unlock(Path(moved_to) / LOCK_FILE, old_fd)

    def release(self) -> None:
        """Drop the lock and remove its file; directories this lock created and nothing else used are removed."""
        fd, directory = self._fd, self.directory
        self._fd = None
        if directory is None:
            return
        if fd is not None:
            _unlock(directory / LOCK_FILE, fd)
        for created in self._created:  # only while empty: a run that never claimed it leaves nothing behind
            try:
                created.rmdir()
            except OSError:
                break
        self.directory, self._created = None, []

    def __del__(self) -> None:  # a trainer dropped without running still frees its directory
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(path: Path, fd: int) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _unlock(path: Path, fd: int) -> None:
    """Remove the lock file (if it is still ours) while holding it, then close it (which drops the lock)."""
    try:
        if _same_file(path, fd):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)
