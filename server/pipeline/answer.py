"""What the pipeline hands back to a door: a whole response, as bytes. Every door writes it as it is (status,
then these headers in this order, then the body), so every door answers byte for byte alike."""

from __future__ import annotations

from dataclasses import dataclass

from server.core.errors import ApiError, V2Error

JSON = b"application/json"
BINARY = b"application/octet-stream"
GRPC = b"application/grpc"  # a serialized protobuf message, for the gRPC door


@dataclass(slots=True, eq=False)  # not frozen: a frozen dataclass's __init__ costs ~3x, once per request
class Answer:
    status: int
    body: bytes
    content_type: bytes = JSON
    extra: tuple[tuple[bytes, bytes], ...] = ()  # after content-type and content-length, in this order
    close: bool = False  # the connection cannot carry another request (a refusal before the body was read)
    error: ApiError | None = None  # what an error answer says, for a door that does not send the JSON body (gRPC)

    def headers(self, close: bool = False) -> list[tuple[bytes, bytes]]:
        """The response's header fields; ``close`` (a draining worker) adds ``connection: close``."""
        return [
            (b"content-type", self.content_type),
            (b"content-length", b"%d" % len(self.body)),
            *self.extra_headers(close),
        ]

    def extra_headers(self, close: bool = False) -> list[tuple[bytes, bytes]]:
        """The fields after content-type and content-length (for a framework that writes those two itself)."""
        return [*self.extra, (b"connection", b"close")] if close or self.close else list(self.extra)


def error_answer(error: ApiError, v2: bool = False) -> Answer:
    """The one rendering of an ``ApiError``: its status, body and headers (in the V2 protocol's body on V2 routes)."""
    rendered = V2Error.of(error) if v2 and not isinstance(error, V2Error) else error
    extra = tuple((name.encode(), value.encode()) for name, value in (error.headers or {}).items())
    return Answer(error.status_code, rendered.body(), JSON, extra, error.closes_connection, error)


OVERLOADED = Answer(
    503, b'{"detail":"too many requests in flight; retry shortly"}', extra=((b"retry-after", b"1"),)
)  # PULSE_MAX_IN_FLIGHT's answer, sent before the body is read (an Expect: 100-continue client sends none)
