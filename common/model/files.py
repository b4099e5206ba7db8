"""Reading a model file safely: a regular file of bounded size, opened without blocking or following a symlink
swapped in, checked against the sha256 it must have. The errors every model reader raises live here too."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


class ModelError(RuntimeError):
    """The model file cannot be served; the message says why in one line."""


def _sha256_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


class ModelFileError(ModelError):
    """The model file itself (missing, unreadable, not a regular file, too large, not the sha256 expected)."""


def _read_model_file(path: Path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The file's bytes: a regular file of at most ``max_bytes`` (not a device, a FIFO or a huge sparse file).
    Opened without blocking (a FIFO has no writer to wait for) and checked on the open descriptor, so a file swapped
    in between a check and the open cannot slip through."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file {str(path)!r} does not exist") from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {str(path)!r}: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL byte in the path
        raise ModelFileError(f"model path {str(path)!r} is not a valid path") from exc
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode):
            raise ModelFileError(f"model path {str(path)!r} is not a regular file")
        if found.st_size > max_bytes:
            raise ModelFileError(
                f"model file {str(path)!r} is {found.st_size} bytes, over PULSE_MAX_MODEL_BYTES={max_bytes}"
            )
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            data = file.read(found.st_size + 1)
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {str(path)!r}: {exc.strerror}") from exc
    if len(data) > found.st_size:
        raise ModelFileError(f"model file {str(path)!r} grew while it was read: still being written?")
    return data


def read_model_bytes(
    path: Path, expected_sha256: str = "", max_bytes: int = 1 << 40, follow_symlinks: bool = True
) -> bytes:
    """The model file's bytes, checked against ``expected_sha256`` or else its ``.sha256`` sidecar, if any."""
    data = _read_model_file(path, max_bytes, follow_symlinks)
    digest = hashlib.sha256(data).hexdigest()
    if not expected_sha256:
        expected_sha256 = _sidecar_sha256(_sha256_file(path), follow_symlinks)
    if expected_sha256 and expected_sha256.lower() != digest:
        raise ModelFileError(
            f"model file {str(path)!r} has sha256 {digest[:12]}..., expected {expected_sha256[:12]}..."
        )
    return data


def _sidecar_sha256(sidecar: Path, follow_symlinks: bool) -> str:
    """The digest a ``.sha256`` sidecar names (its first word), ``""`` without a sidecar."""
    try:
        text = _read_model_file(sidecar, 4096, follow_symlinks)
    except ModelFileError:
        if os.path.lexists(sidecar):
            raise ModelFileError(f"sha256 file {str(sidecar)!r} is not a small regular file") from None
        return ""
    try:
        words = text.decode("ascii").split()
    except UnicodeDecodeError:
        raise ModelFileError(f"sha256 file {str(sidecar)!r} is not text") from None
    return words[0] if words else ""
