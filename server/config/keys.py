"""API keys: ``PULSE_API_KEYS_FILE`` holds one hashed key per line, each with a scope.

    sha256:<64 hex digits> predict [name]
    sha256:<64 hex digits> admin   [name]

Only the SHA-256 of a key is stored (keys are random 256-bit tokens, so a plain hash is enough: nothing to
brute-force). A request presents ``Authorization: Bearer <key>``; its hash is compared with every stored hash in
constant time. ``predict`` keys may call the model (``/predict``, ``/metadata``, the V2 model routes); ``admin``
keys may also swap the model (``POST /admin/model``). Probes, ``/metrics`` and the docs stay open. Keys are never
logged. ``python -m server.config.keys new --scope predict --name crm`` makes a key and prints the line to add.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("predict", "metrics", "admin")  # what each route needs: server.core.access
PREFIX = "sha256:"


class KeysError(ValueError):
    """The keys file cannot be used; the message names the file and the line."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    digest: bytes
    scope: str
    name: str


def hash_key(key: str | bytes) -> str:
    return PREFIX + hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


class KeyRing:
    """The keys of one keys file."""

    def __init__(self, keys: list[ApiKey], path: Path | None = None) -> None:
        self.keys = keys
        self.path = path

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeysError(
                f"cannot read API keys file {str(path)!r}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        keys = []
        for number, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"API keys file {str(path)!r} line {number}"
            hashed, scope, name = fields[0], fields[1] if len(fields) > 1 else "", " ".join(fields[2:])
            hex_digest = hashed.removeprefix(PREFIX)
            if not hashed.startswith(PREFIX) or len(hex_digest) != 64 or not _is_hex(hex_digest):
                raise KeysError(f"{where}: expected 'sha256:<64 hex digits> <scope> [name]'")
            if scope not in SCOPES:
                raise KeysError(f"{where}: scope {scope!r} is not one of {', '.join(SCOPES)}")
            keys.append(ApiKey(bytes.fromhex(hex_digest), scope, name))
        if not keys:
            raise KeysError(f"API keys file {str(path)!r} holds no keys: every request would be refused")
        return cls(keys, path)

    def scope_of(self, authorization: bytes | None) -> str | None:
        """The scope of the presented bearer key, or ``None`` when there is no valid one."""
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return None
        digest = hashlib.sha256(authorization[7:].strip()).digest()
        found = None
        for key in self.keys:  # every key compared, whichever matches: the time does not depend on the key
            if hmac.compare_digest(key.digest, digest):
                found = key.scope
        return found


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.config.keys", description="Make an API key.")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="print a new key (once) and the line for PULSE_API_KEYS_FILE")
    new.add_argument("--scope", choices=SCOPES, default="predict")
    new.add_argument("--name", default="", help="a label for the key, kept in the file")
    args = parser.parse_args(argv)
    key = "pk_" + secrets.token_urlsafe(32)
    print(f"key (give it to the client; it is not stored): {key}")
    print(f"line for PULSE_API_KEYS_FILE: {hash_key(key)} {args.scope} {args.name}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
