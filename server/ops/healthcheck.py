"""``python -m server.ops.healthcheck``: the image's HEALTHCHECK. ``GET /health`` on this container's own port, over
https when ``PULSE_TLS_CERT`` is set (a plain-http probe of a TLS server fails, and the container is then marked
unhealthy however well it serves). The certificate is not verified: the probe talks to itself on loopback."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main() -> int:
    tls = bool(os.environ.get("PULSE_TLS_CERT", "").strip())
    url = f"{'https' if tls else 'http'}://127.0.0.1:{os.environ.get('PULSE_PORT', '8000')}/health"
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
