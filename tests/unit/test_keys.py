"""API keys: the file format, one-line errors naming the line, and scope look-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from server.config.keys import KeyRing, KeysError, hash_key


def _ring(tmp_path: Path, text: str) -> KeyRing:
    path = tmp_path / "keys"
    path.write_text(text)
    return KeyRing.load(path)


def test_a_key_is_recognised_by_its_hash_with_its_scope(tmp_path: Path) -> None:
    ring = _ring(
        tmp_path, f"# who may call\n{hash_key('p-key')} predict crm\n\n{hash_key('a-key')} admin ops  # on call\n"
    )
    assert ring.scope_of(b"Bearer p-key") == "predict"
    assert ring.scope_of(b"bearer a-key ") == "admin"
    assert ring.scope_of(b"Bearer nope") is None
    assert ring.scope_of(b"Basic cC1rZXk=") is None
    assert ring.scope_of(None) is None
    assert [key.name for key in ring.keys] == ["crm", "ops"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sha256:abc predict\n", "line 1: expected 'sha256:<64 hex digits> <scope> [name]'"),
        (f"\n{hash_key('k')} root\n", "line 2: scope 'root' is not one of predict, metrics, admin"),
        (f"{hash_key('k')[7:]} predict\n", "line 1: expected"),
        ("# nothing but comments\n", "holds no keys"),
    ],
)
def test_a_bad_keys_file_is_one_error_naming_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(KeysError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _ring(tmp_path, text)


def test_the_key_maker_prints_a_line_the_file_accepts(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "server.config.keys", "new", "--scope", "admin", "--name", "ops"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    line = out[1].split(": ", 1)[1]
    ring = _ring(tmp_path, line + "\n")
    assert ring.scope_of(f"Bearer {key}".encode()) == "admin"
    assert key not in line
