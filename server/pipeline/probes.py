"""The probes' answers (``/health``, ``/ready`` and the V2 protocol's two), for every door.

A probe is answered wherever it is read: the fast door answers it on its connection as soon as its head is parsed,
between two turns of batch work (never behind a queue of them), the ASGI door before any routing. Both write the
same :class:`~server.pipeline.answer.Answer`, built here; gRPC's ``ServerLive`` and ``ServerReady`` send the V2 probes'
documents as messages.
"""

from __future__ import annotations

import orjson

from server.pipeline.answer import Answer
from server.pipeline.state import ServerState


def probe_answer(state: ServerState, path: bytes) -> Answer:
    """The answer to ``GET path`` for one of :data:`~server.core.access.PROBES`."""
    status, document = probe_document(state, path)
    return Answer(status, orjson.dumps(document))


def probe_document(state: ServerState, path: bytes) -> tuple[int, dict[str, object]]:
    """The status and the document of a probe's answer (gRPC's ServerLive and ServerReady send the V2 ones' as
    messages)."""
    ready = state.ready
    if path == b"/health":
        document: dict[str, object] = {"status": "ok"}
        status = 200
    elif path == b"/ready":
        if ready:
            document = {"status": "ready", "model_version": state.require_model().info.version}
        else:
            document = {"status": "draining" if state.draining else "loading"}
        status = 200 if ready else 503
    elif path == b"/v2/health/live":
        document, status = {"live": True}, 200
    elif path == b"/v2/health/ready":
        document, status = {"ready": ready}, 200 if ready else 503
    else:
        raise ValueError(f"not a probe: {path!r}")
    return status, document
