"""A throw-away real Redis server for tests.

``redis_server_url`` starts ``redis-server`` on a free localhost port (no persistence,
its own temporary directory), waits until it answers PING, yields
``redis://127.0.0.1:PORT/0`` and stops the server afterwards. One server per test
module. Use it by importing it into a test module::

    from tests.redis_fixture import redis_server_url  # noqa: F401

The binary is ``$NUDGE_REDIS_SERVER`` if set, else ``redis-server`` on PATH, else
``/usr/bin/redis-server``. Tests fail (not skip) when there is none: they need Redis.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

START_TIMEOUT_S = 10.0


def _redis_server_binary() -> str:
    candidate = os.environ.get("NUDGE_REDIS_SERVER") or shutil.which("redis-server")
    if candidate:
        return candidate
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    pytest.fail("redis-server not found (install the 'redis-server' package or set NUDGE_REDIS_SERVER)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    log = workdir / f"redis-{port}.log"
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(log),
            "--daemonize", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return proc, port, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = _redis_server_binary()
    workdir = tmp_path_factory.mktemp("redis")
    last_problem = "not started"
    for _attempt in range(3):  # the free port may be taken between bind and start
        proc, port, log = _start(binary, workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            else:
                last_problem = log.read_text(errors="replace")[-2000:] if log.exists() else "no log"
                _stop(proc)
                continue
        finally:
            client.close()
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            _stop(proc)
        return
    pytest.fail(f"redis-server did not start: {last_problem}")
