"""Start, wait for, and stop server processes on loopback (used by the benchmarks and the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post_json(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def metric(url: str, name: str, key: str | None = None, **labels: str) -> float:
    """The value of the unlabelled sample ``name`` in the server's ``/metrics`` (scraped with ``key`` when API keys are
    on); with ``labels``, the sum of the samples of ``name`` that carry them (0 when none does yet)."""
    headers = {"authorization": f"Bearer {key}"} if key else None
    text = http_get(url + "/metrics", timeout=5, headers=headers)[1].decode()
    if not labels:
        return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line.rsplit(" ", 1)[0] for label in wanted)
    )


def percentile_ms(seconds: list[float], q: float) -> float | None:
    """The ``q`` quantile of ``seconds``, in milliseconds (``None`` without samples)."""
    ordered = sorted(seconds)
    return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else None


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files in ``folder``), made with ``openssl``."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class Repeating:
    """Calls ``once`` every ``every`` seconds in a background thread while its ``with`` block runs: a client that
    keeps measuring while a load test runs."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def once(self) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Called in the thread once the block ends."""

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.every)
        self.finish()


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    url: str
    ready_seconds: float
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_ready(process: subprocess.Popen[bytes], url: str, path: str, timeout: float) -> float:
    """Seconds until ``url + path`` answers 200; raises if the process dies or time runs out."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        try:
            if http_get(url + path, timeout=0.5)[0] == 200:
                return time.perf_counter() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"server at {url} not ready after {timeout}s")


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


@contextmanager
def run_server(
    command: Sequence[str],
    port: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/ready",
    timeout: float = 30.0,
    cpu: int | None = None,
) -> Iterator[ServerProcess]:
    """Run ``command`` (which must listen on 127.0.0.1:``port``) until the block ends."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    argv = list(command)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        argv = ["taskset", "-c", str(cpu), *argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(process, url, ready_path, timeout)
        yield ServerProcess(process, url, ready, log_path)
    finally:
        stop(process)


def worker_processes(supervisor: int) -> list[Any]:
    """The worker processes of a ``--workers N`` server (not the multiprocessing resource tracker beside them)."""
    import psutil

    found = []
    for child in psutil.Process(supervisor).children():
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited (or a zombie not yet reaped) between the listing and the look
            continue
    return found


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def locust_command(url: str, user_class: str, users: int, seconds: float, csv_prefix: Path) -> list[str]:
    """A headless, time-bounded locust run of one user class from ``benchmarks/locustfile.py``."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "benchmarks" / "locustfile.py"),
        user_class,
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{max(3, round(seconds))}s",
        "--host",
        url,
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
