"""Caller ids: a business id sent beside a row's features, echoed in its answer and written to the request log, so
that a label learned weeks later can be joined to the answer the server gave.

``/predict`` takes ``"id"`` in a row object (or an ``"id"`` list beside the columns): a string or an integer. The V2
protocol takes a BYTES input tensor named ``id`` (one string per row) and answers a BYTES output ``id``; its
binary form is the protocol's: each element a 4-byte little-endian length and that many UTF-8 bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from server.core.errors import V2Error, field_error, shown

ID_FIELD = "id"
MAX_ID_CHARS = 256
INT64 = 1 << 63
Id = str | int


def id_problem(value: Any) -> tuple[str, str] | None:
    """Why ``value`` cannot be a caller id (message, error type), ``None`` when it can."""
    if type(value) is int:
        return None if -INT64 <= value < INT64 else ("Input should be an integer within 64 bits", "id_range")
    if type(value) is not str:
        return "Input should be a string or an integer (the caller's id)", "id_type"
    if not 0 < len(value) <= MAX_ID_CHARS:
        return f"Input should be a string of 1 to {MAX_ID_CHARS} characters", "id_length"
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate, which the stdlib JSON parser lets through
        return "Input should be valid Unicode", "id_unicode"
    return None


def request_id(value: Any) -> str | None:
    """A V2 request's own ``id`` (JSON, binary or gRPC), bounded like a row's: ``None`` when absent or empty."""
    if value is None or value == "":
        return None
    if type(value) is not str or id_problem(value) is not None:
        raise V2Error(f"request 'id' must be a string of 1 to {MAX_ID_CHARS} characters of valid Unicode")
    return value


def id_error(loc: list[str | int], value: Any) -> dict[str, Any] | None:
    """The 422 error item for a bad id at ``loc``, ``None`` for a good one."""
    problem = id_problem(value)
    return None if problem is None else field_error(loc, *problem)


def decode_strings(raw: bytes, count: int, what: str) -> list[str]:
    """The ``count`` elements of a BYTES tensor in the protocol's binary form, as text."""
    found, at = [], 0
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<I", raw, at)
            at += 4
            if at + length > len(raw):
                raise struct.error
            found.append(raw[at : at + length].decode())
            at += length
    except (struct.error, UnicodeDecodeError):
        raise V2Error(f"{what} must hold {count} length-prefixed UTF-8 strings") from None
    if at != len(raw):
        raise V2Error(f"{what} holds {len(raw) - at} bytes after its {count} strings")
    return found


def encode_strings(values: list[str]) -> bytes:
    """A BYTES tensor in the protocol's binary form."""
    parts = []
    for value in values:
        data = value.encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def check_id_tensor(datatype: object, shape: object, rows: int) -> None:
    """The V2 ``id`` input's type and shape, whichever encoding carried them: BYTES, ``[N]`` or ``[N, 1]``."""
    if datatype != "BYTES" or shape not in ([rows], [rows, 1]):
        raise V2Error(
            f"input 'id' must be BYTES of shape [{rows}] (one id per row), got {shown(datatype)} {shown(shape)}"
        )


def check_v2_ids(values: list[Any], rows: int) -> list[str]:
    """The V2 ``id`` tensor's values: one non-empty string per row, at most ``MAX_ID_CHARS`` characters each."""
    if len(values) != rows:
        raise V2Error(f"input 'id' has {len(values)} values; the batch has {rows} rows (one id per row)")
    for i, value in enumerate(values):
        if type(value) is not str or id_problem(value) is not None:
            raise V2Error(f"input 'id' value {i} must be a string of 1 to {MAX_ID_CHARS} characters")
    return values
