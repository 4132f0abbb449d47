"""Starting and stopping the whole product: Redis (if none answers), engine, action server,
gateway and worker, as child processes with their output prefixed by name.

`make run` uses it through `nudge up`; the end-to-end tests use the same class with their
own ports and Redis, so what the tests start is what a user starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO
from urllib.parse import urlparse

from service.engine_model import ENGINE_VENV, ensure_model
from service.settings import PROJECT_ROOT, Settings

APP_PYTHON = sys.executable


class StackError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    relay: threading.Thread | None = None


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    out: TextIO = sys.stdout
    children: list[Child] = field(default_factory=list)
    quiet: bool = False
    engine_urls: list[str] = field(default_factory=list)
    gateway_urls: list[str] = field(default_factory=list)

    # --- processes --------------------------------------------------------------------
    def _spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env or self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
        )
        child = Child(name, process)
        child.relay = threading.Thread(target=self._relay, args=(child,), daemon=True)
        child.relay.start()
        self.children.append(child)
        return child

    def _relay(self, child: Child) -> None:
        assert child.process.stdout is not None
        for line in child.process.stdout:
            if not self.quiet:
                self.out.write(f"{child.name:>8} | {line}")
                self.out.flush()

    def start_redis_if_needed(self) -> None:
        url = self.settings.redis_url
        if redis_answers(url):
            return
        parsed = urlparse(url)
        if parsed.hostname not in ("127.0.0.1", "localhost", None):
            raise StackError(f"no Redis answers at {url} and it is not local, so it cannot be started")
        server = shutil.which("redis-server")
        if server is None:
            raise StackError("redis-server is not installed: run `make setup` (installs Debian's redis-server)")
        data_dir = self.settings.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("redis", [server, "--port", str(parsed.port or 6379), "--bind", "127.0.0.1",
                              "--dir", str(data_dir), "--appendonly", "yes", "--save", "",
                              "--protected-mode", "yes"])
        self._wait("redis", lambda: redis_answers(url), 20)

    def start_sandbox_providers(self) -> None:
        """Local stand-ins for Twilio and a mail server (sandbox/): the fake Twilio API
        answers the real SDK and posts signed status callbacks to the gateway; the SMTP
        sink keeps every outbound email as a file in .run/mail. Their addresses come from
        `sandbox_env` (already in this stack's environment)."""
        twilio_port = str(urlparse(self.settings.twilio_api_url).port)
        self._spawn("twilio", [APP_PYTHON, "-m", "sandbox.fake_twilio", "--port", twilio_port,
                               "--account-sid", self.settings.twilio_account_sid])
        # (its auth token comes from TWILIO_AUTH_TOKEN in the environment, not the command line)
        mail_dir = self.settings.state_dir / "mail"
        mail_dir.mkdir(parents=True, exist_ok=True)
        self._spawn("mail", [APP_PYTHON, "-m", "sandbox.smtp_sink", "--port",
                             str(self.settings.smtp_port), "--dir", str(mail_dir)])
        # a creditor's system receiving our signed business events (sandbox/fake_creditor.py)
        creditor_port = urlparse(self.settings.creditor_events_url).port
        if creditor_port:
            self._spawn("creditor", [APP_PYTHON, "-m", "sandbox.fake_creditor", "--port",
                                     str(creditor_port)])
        self._wait("twilio", lambda: _port_open("127.0.0.1", int(twilio_port)), 30)
        self._wait("mail", lambda: _port_open("127.0.0.1", self.settings.smtp_port), 30)
        if creditor_port:
            self._wait("creditor", lambda: _port_open("127.0.0.1", creditor_port), 30)

    def start_services(self, *, model: Path | None = None, workers: int = 1, gateways: int = 1,
                       engines: int = 1, action_servers: int = 1) -> None:
        """Action server, engine, gateway and workers; all spawned first, then awaited, so
        their start-ups overlap. More than one of each is the scale-out layout (docs/
        performance.md): every extra process on a free loopback port; engine i calls action
        server i mod n; every worker spreads conversations over all engines (service/engine.py);
        the gateways share the public URL (behind a balancer), and only the first one listens
        for inbound SMTP. The first of each uses the ports in the settings."""
        model = model or ensure_model(log=self._say)
        action_ports = self.spawn_action_servers(action_servers)
        self.spawn_engines(model, engines, action_ports)
        self.spawn_gateways(gateways)
        for index in range(workers):
            self.start_worker(_nth("worker", index, workers))
        self.wait_ready(action_ports)

    def spawn_action_servers(self, count: int) -> list[int]:
        ports = [self.settings.actions_port] + [free_port() for _ in range(count - 1)]
        for index, port in enumerate(ports):
            self._spawn(_nth("actions", index, count), [APP_PYTHON, "-m", "service.action_server"],
                        env=dict(self.env, NUDGE_ACTIONS_PORT=str(port)))
        return ports

    def spawn_engines(self, model: Path, count: int, action_ports: list[int]) -> None:
        ports = [self.engine_port] + [free_port() for _ in range(count - 1)]
        self.engine_urls = [f"http://127.0.0.1:{port}" for port in ports]
        self.env = dict(self.env, NUDGE_ENGINE_URL=",".join(self.engine_urls))
        for index, port in enumerate(ports):
            self.spawn_engine(model, port=port, actions_port=action_ports[index % len(action_ports)],
                              name=_nth("engine", index, count))

    def spawn_gateways(self, count: int) -> None:
        ports = [self.settings.gateway_port] + [free_port() for _ in range(count - 1)]
        self.gateway_urls = [f"http://{self.settings.gateway_host}:{port}" for port in ports]
        for index, port in enumerate(ports):
            extra = {"NUDGE_GATEWAY_PORT": str(port)}
            if index:
                extra["NUDGE_SMTP_LISTEN_PORT"] = "0"
            self._spawn(_nth("gateway", index, count), [APP_PYTHON, "-m", "service.gateway"],
                        env=dict(self.env, **extra))

    def wait_ready(self, action_ports: list[int] = ()) -> None:
        """Until every action server, gateway and engine spawned so far answers."""
        for port in action_ports:
            self._wait("actions", lambda port=port: _http_ok(f"http://127.0.0.1:{port}/health"), 60)
        for url in self.gateway_urls:
            self._wait("gateway", lambda url=url: _http_ok(f"{url}/healthz"), 60)
        for url in self.engine_urls:
            self._wait("engine", lambda url=url: self.engine_ready(url), 240)

    def start_engine_only(self, model: Path | None = None) -> float:
        """Just the engine with its NLU and an in-memory tracker: enough for /model/parse.
        Returns its cold start: seconds from spawning it until /status answers."""
        started = time.monotonic()
        self.spawn_engine(model or ensure_model(log=self._say), with_endpoints=False)
        self._wait("engine", self.engine_ready, 240)
        return time.monotonic() - started

    @property
    def engine_port(self) -> int:
        return urlparse(self.settings.engine_urls[0]).port or 5005

    def spawn_engine(self, model: Path, *, with_endpoints: bool = True, port: int | None = None,
                     actions_port: int | None = None, name: str = "engine") -> Child:
        """The Rasa engine on loopback with its token; with_endpoints: Redis tracker and lock
        stores and the action server (engine/endpoints.yml), else in-memory and no actions."""
        command = [
            str(ENGINE_VENV / "bin" / "rasa"), "run", "--enable-api", "--auth-token",
            self.settings.engine_token, "--interface", "127.0.0.1", "--port",
            str(port or self.engine_port),
            "--model", str(model), "--credentials", "engine/credentials.yml",
        ]
        if with_endpoints:
            command += ["--endpoints", "engine/endpoints.yml"]
        return self._spawn(name, command, env=self.engine_env(actions_port))

    def engine_env(self, actions_port: int | None = None) -> dict[str, str]:
        """What engine/endpoints.yml reads, from our settings (one source of truth)."""
        host, port, db = self.settings.redis_parts
        return dict(
            self.env, NUDGE_REDIS_HOST=host, NUDGE_REDIS_PORT=str(port), NUDGE_REDIS_DB=str(db),
            NUDGE_ENGINE_KEY_PREFIX=self.settings.engine_key_prefix,
            NUDGE_ACTIONS_PORT=str(actions_port or self.settings.actions_port),
            NUDGE_ACTIONS_TOKEN=self.settings.actions_token,
            PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="3", RASA_TELEMETRY_ENABLED="false",
        )

    def engine_ready(self, url: str | None = None) -> bool:
        url = url or self.settings.engine_urls[0]
        return _http_ok(f"{url}/status?token={self.settings.engine_token}")

    def start_worker(self, name: str = "worker") -> Child:
        return self._spawn(name, [APP_PYTHON, "-m", "service.worker"])

    def pids(self) -> dict[str, int]:
        """Process id of every running child by name (for memory figures and fault tests)."""
        return {c.name: c.process.pid for c in self.children if c.process.poll() is None}

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name and c.process.poll() is None)

    def _wait(self, name: str, check: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            dead = [c for c in self.children if c.process.poll() is not None]
            if dead:
                raise StackError(f"{dead[0].name} exited with code {dead[0].process.returncode}")
            time.sleep(0.05)
        raise StackError(f"{name} did not become ready within {seconds:.0f} s")

    def _say(self, text: str) -> None:
        self.out.write(f"{'nudge':>8} | {text}\n")
        self.out.flush()

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the services (newest first), then Redis once they are gone; SIGKILL
        whoever outlives the timeout. Redis goes last so nobody loses it mid-shutdown."""
        services = [c for c in reversed(self.children) if c.name != "redis"]
        redis = [c for c in self.children if c.name == "redis"]
        for group in (services, redis):
            for child in group:
                stop_process(child.process, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    child.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    stop_process(child.process, signal.SIGKILL)
                    child.process.wait(5)
        self.children.clear()


def _nth(name: str, index: int, count: int) -> str:
    return f"{name}{index + 1}" if count > 1 else name


def stop_process(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def sandbox_env(*, twilio_port: int, smtp_port: int, smtp_listen_port: int,
                creditor_port: int = 8095) -> dict[str, str]:
    """Environment that points the product at the sandbox providers: the fake Twilio API, the
    SMTP sink for outbound mail, the gateway's own SMTP listener for inbound mail, and a
    creditor's system that receives our business events."""
    return {"NUDGE_TWILIO_API_URL": f"http://127.0.0.1:{twilio_port}",
            "NUDGE_CREDITOR_EVENTS_URL": f"http://127.0.0.1:{creditor_port}/events",
            "NUDGE_SMTP_HOST": "127.0.0.1", "NUDGE_SMTP_PORT": str(smtp_port),
            "NUDGE_SMTP_STARTTLS": "never", "NUDGE_SMTP_LISTEN_PORT": str(smtp_listen_port)}
