"""A request's head as the pipeline reads it: one scan of the header list, whichever door the request came in by.

Every door (the connection's own path, the ASGI app) hands the same ``(name, value)`` byte pairs, names in lower
case, to :meth:`RequestHead.scan`; what a header means, and what two copies of a single-valued header mean, is
decided here once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.core.errors import ApiError, UnsupportedMediaType, shown

HEADER_LENGTH = b"inference-header-content-length"  # V2's binary tensor extension: the JSON part's length
_SINGLE = {
    b"content-type": "content_type",
    b"content-length": "content_length",
    b"content-encoding": "content_encoding",
    b"authorization": "authorization",
    HEADER_LENGTH: "header_length",
}
MAX_LENGTH_DIGITS = 18  # int() refuses 4,300+ digits; 18 digits are more than any body we accept


@dataclass(slots=True)
class RequestHead:
    content_type: bytes | None = None
    content_length: bytes | None = None
    content_encoding: bytes | None = None
    authorization: bytes | None = None
    header_length: bytes | None = None
    transfer_encoding: bool = False
    repeated: bytes | None = None  # the first single-valued header sent more than once: the request is ambiguous
    hosts: int = 0  # Host fields (RFC 9112 wants exactly one in HTTP/1.1)
    expects_continue: bool = False  # Expect: 100-continue
    size: int = 0  # bytes of the fields: names, values and their separators
    traceparent: bytes | None = None  # W3C Trace Context (the last one sent; a bad one starts a new trace)
    tracestate: bytes | None = None

    @classmethod
    def scan(cls, headers: Iterable[tuple[bytes, bytes]]) -> RequestHead:
        head = cls()
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
            field = _SINGLE.get(name)
            if field is not None:
                if getattr(head, field) is not None and head.repeated is None:
                    head.repeated = name
                setattr(head, field, value.rstrip(b" \t"))  # RFC 9110 5.5: not part of the value (every server)
            elif name == b"host":
                head.hosts += 1
            elif name == b"traceparent":
                head.traceparent = value
            elif name == b"tracestate":
                head.tracestate = value
            elif name == b"transfer-encoding":
                head.transfer_encoding = True
            elif name == b"expect":
                head.expects_continue = value.strip().lower() == b"100-continue"
        head.size = size
        return head

    def trace_context(self) -> tuple[bytes, bytes | None] | None:
        """The W3C Trace Context it came with (traceparent, tracestate); ``None`` without a traceparent."""
        return None if self.traceparent is None else (self.traceparent, self.tracestate)

    def check_single(self) -> None:
        """400 when a header that has one meaning was sent twice (two keys, two types, two lengths)."""
        if self.repeated is not None:
            raise ApiError(f"the {self.repeated.decode('latin-1')} header was sent more than once")

    def media_type(self) -> bytes:
        return media_type(self.content_type or b"")

    def check_encoding(self) -> None:
        """415 for a compressed body (any Content-Encoding but identity): bodies are read as they are sent."""
        encoding = self.content_encoding
        if encoding is not None and encoding.strip().lower() not in (b"", b"identity"):
            raise UnsupportedMediaType(f"Content-Encoding {shown(encoding.decode('latin-1'))} is not supported")

    def declared_length(self) -> int | None:
        """The Content-Length as a number, ``None`` without one; 400 when it is not a number."""
        length = self.content_length
        if length is None:
            return None
        if not (length.isdigit() and len(length) <= MAX_LENGTH_DIGITS):
            length = length.strip()  # the parser lets optional whitespace through
            if not (length.isdigit() and len(length) <= MAX_LENGTH_DIGITS):
                raise ApiError("Content-Length is not a number")
        return int(length)


def media_type(content_type: bytes) -> bytes:
    return content_type.split(b";", 1)[0].strip().lower()
