"""The request log's file: appended one request at a time, rotated by size and age, never losing a line.

Every worker of ``--workers N`` appends to the same path (``O_APPEND``: one ``write`` per request, so lines never
interleave). Rotation renames the file to ``<stem>.<UTC time><suffix>`` (``requests.20261203T140501123Z.jsonl``)
under an exclusive ``flock`` on a lock file beside it, after checking again that it is still the file that was due,
so two workers never rotate twice. A worker notices the rename before its next write (the path names another file)
and reopens; what it wrote in between went to the renamed file, whole. Only ``keep`` (when set) deletes: the
oldest rotated files beyond that many.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Rotation:
    """When the request log moves to a new file, and how many old ones stay (0: no limit)."""

    max_bytes: int = 0
    max_age_seconds: float = 0.0
    keep: int = 0


NO_ROTATION = Rotation()


class RequestLogError(ValueError):
    """The request log's path cannot be a log file; the message names it."""


def _writable_kind(mode: int) -> bool:
    # A regular file, or a character device such as /dev/null or /dev/full; a FIFO would block its writer for good.
    return stat.S_ISREG(mode) or stat.S_ISCHR(mode)


def check_request_log_path(path: Path | None) -> None:
    """A request log must be a regular file or a character device (or not exist yet)."""
    if path is not None and path.exists() and not _writable_kind(path.stat().st_mode):
        raise RequestLogError(f"request log {str(path)!r} (PULSE_REQUEST_LOG) is not a regular file")


def rotated_files(path: Path) -> list[Path]:
    """The files ``path`` was rotated into, oldest first (by their last write, then name)."""

    def written(file: Path) -> tuple[int, str]:
        try:
            return file.stat().st_mtime_ns, file.name
        except OSError:
            return 0, file.name

    # Only the names rotation makes (<stem>.<UTC time>[-n]<suffix>): an operator's requests.backup.jsonl is theirs.
    made = re.compile(rf"{re.escape(path.stem)}\.\d{{8}}T\d{{9}}Z(-\d+)?{re.escape(path.suffix)}")
    return sorted((file for file in path.parent.iterdir() if made.fullmatch(file.name)), key=written)


class LogFile:
    """Appends to ``path`` and rotates it; its methods are called from one thread (the request log's)."""

    def __init__(self, path: Path, rotation: Rotation) -> None:
        self.path = path
        self.rotation = rotation
        self.rotations = 0
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._started = 0.0  # when the open file's first line was written (its age counts from there)
        self._lock = path.with_name(f".{path.name}.lock")

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines); raises ``OSError`` when it cannot."""
        if self._fd is None or self._moved():
            self._open()
        assert self._fd is not None
        if self._due(len(data)):
            self._rotate()
            self._open()
        self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        """Every byte of ``data``, however many writes it takes (review L5: a short write, on a nearly full disk or
        at ``RLIMIT_FSIZE``, left a cut line that the next append joined). A write that fails midway ends the cut
        line with a newline, so the entries after it start lines of their own; the caller counts the rows lost."""
        assert self._fd is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
                if written == 0:
                    raise OSError(errno.ENOSPC, "no room to write the request log")
            except OSError:
                if len(view) < len(data):
                    with contextlib.suppress(OSError):
                        os.write(self._fd, b"\n")
                raise
            view = view[written:]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Non-blocking, so a FIFO put there after start-up fails now instead of hanging the writer thread.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        info = os.fstat(fd)
        if not _writable_kind(info.st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        self._fd, self._inode = fd, (info.st_dev, info.st_ino)
        self._started = _first_line_time(self.path) if info.st_size else time.time()

    def _moved(self) -> bool:
        """Whether the path now names another file (another worker rotated it) or none."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (info.st_dev, info.st_ino) != self._inode

    def _due(self, adding: int) -> bool:
        assert self._fd is not None
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False
        limits = self.rotation
        too_big = limits.max_bytes > 0 and info.st_size + adding > limits.max_bytes
        too_old = limits.max_age_seconds > 0 and time.time() - self._started >= limits.max_age_seconds
        return too_big or too_old

    def _rotate(self) -> None:
        with open(self._lock, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the lock file closes
            if self._moved():  # another worker rotated it first: write to the new file
                return
            now = time.time()
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1000):03d}Z"
            target = self.path.with_name(f"{self.path.stem}.{stamp}{self.path.suffix}")
            n = 1
            while target.exists():
                target = self.path.with_name(f"{self.path.stem}.{stamp}-{n}{self.path.suffix}")
                n += 1
            os.rename(self.path, target)
            self.rotations += 1
            if self.rotation.keep > 0:
                for old in rotated_files(self.path)[: -self.rotation.keep]:
                    old.unlink(missing_ok=True)


def _first_line_time(path: Path) -> float:
    """When the file's first line was written (its ``ts``), or now when that cannot be read."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
        text = head.split(b'"ts":"', 1)[1].split(b'"', 1)[0].decode()
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (OSError, IndexError, ValueError, UnicodeDecodeError):
        return time.time()
