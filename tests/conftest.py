"""Shared fixtures: a real Redis server per test session, and the real product stack
(engine with the trained model, action server, gateway, worker) for end-to-end tests.

Nothing here is a mock: the stack is the same `service.stack.Stack` that `make run` starts,
on free ports, with its own Redis and key prefixes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis

from service.settings import Settings, new_token
from service.stack import Stack, free_port, redis_answers, sandbox_env

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> str:
    """A fresh redis-server on a free loopback port; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make setup`")
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
         "--save", "", "--appendonly", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while not redis_answers(url):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis (db 0), emptied for this test. The product stack uses db 1."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


def stack_env(redis_url: str, **extra: str) -> dict[str, str]:
    gateway_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "NUDGE_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
        "NUDGE_ENGINE_TOKEN": new_token(),
        "NUDGE_ACTIONS_PORT": str(free_port()),
        "NUDGE_ACTIONS_TOKEN": new_token(),
        "NUDGE_PSEUDONYM_KEY": new_token(),
        "NUDGE_GATEWAY_PORT": str(gateway_port),
        "NUDGE_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
        "NUDGE_STATE_DIR": str(ROOT / ".run" / "test"),
        "NUDGE_CONVERSATION_LOCK_SECONDS": "5",
        "NUDGE_LOG_LEVEL": "WARNING",
        # a sandbox Twilio account: the fake Twilio server (sandbox/fake_twilio.py) knows it
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        **sandbox_env(twilio_port=free_port(), smtp_port=free_port(),
                      smtp_listen_port=free_port(), creditor_port=free_port()),
        "NUDGE_PAY_LINK_SECRET": new_token(),
        "NUDGE_PAYMENT_WEBHOOK_SECRET": new_token(),
        "NUDGE_CREDITOR_WEBHOOK_SECRET": new_token(),
        "NUDGE_API_TOKEN": new_token(),
        **extra,
    }
    return env


class RunningStack:
    def __init__(self, stack: Stack, env: dict[str, str]):
        self.stack = stack
        self.env = env
        self.settings = stack.settings

    @property
    def base_url(self) -> str:
        return self.settings.public_url


def always_open_policies(directory: Path) -> Path:
    """The real contact policy with every contact window open all day. End-to-end tests run at
    whatever hour CI runs them; the windows themselves are tested with a controllable clock
    (tests/core/test_contact_windows.py, tests/compliance/test_situations.py)."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    for policy in (ROOT / "policies").glob("*.yml"):
        shutil.copy(policy, directory / policy.name)
    jurisdictions = yaml.safe_load((ROOT / "policies" / "jurisdictions.yml").read_text())
    for pack in jurisdictions["packs"].values():
        for day in ("weekday", "saturday", "sunday", "public_holiday"):
            pack[day] = "00:00-24:00"
    (directory / "jurisdictions.yml").write_text(yaml.safe_dump(jurisdictions))
    # A segment of its own for the end-to-end campaign test (tests/e2e/test_campaigns.py): only
    # its debtors (creditor "E2E Campaign Creditor") are in it, so the campaign it runs on the
    # shared stack writes to nobody another test talks to.
    segments = yaml.safe_load((ROOT / "policies" / "segments.yml").read_text())
    segments["segments"].insert(0, {
        "name": "e2e_campaign", "when": {"creditor": ["E2E Campaign Creditor"]},
        "workflow": {"steps": [{"day": 0, "template": "reminder_first"},
                               {"day": 1, "template": "reminder_second"}],
                     "channels": ["sms"], "tones": ["loss_aversion", "social_proof", "soft"]}})
    (directory / "segments.yml").write_text(yaml.safe_dump(segments, sort_keys=False))
    return directory


@pytest.fixture(scope="session")
def product(redis_server, tmp_path_factory) -> RunningStack:
    """The whole product, started once per session (the engine takes a while to load)."""
    policies = always_open_policies(tmp_path_factory.mktemp("policies"))
    env = stack_env(redis_server.rsplit("/", 1)[0] + "/1", NUDGE_POLICIES_DIR=str(policies))
    settings = Settings.from_env(env)
    (ROOT / ".run").mkdir(exist_ok=True)
    log = open(ROOT / ".run" / "test-stack.log", "w")  # every process's output, for post-mortems
    stack = Stack(settings, env, out=log)
    try:
        stack.start_sandbox_providers()
        stack.start_services()
    except Exception:
        stack.stop()
        raise
    yield RunningStack(stack, env)
    stack.stop()
    log.close()


@pytest.fixture
def shared_dir() -> Path:
    return SHARED


@pytest.fixture
def redis_server_url(redis_url: str) -> str:
    """Alias used by the store and importer tests."""
    return redis_url
