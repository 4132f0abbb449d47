"""Scale-out: 2 gateways, 2 workers, 2 engines and 2 action servers on one Redis, under load.

Simulated debtors (sim/load.py) send signed Twilio webhooks round-robin to both gateways at a
steady rate; a quarter of them send their first two messages back to back, so those two can
land on different gateways and be picked up by different workers. Afterwards every message
must have been answered exactly once, in order, with the right reply, and every process must
have done part of the work.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import date
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings
from service.stack import Stack
from sim.load import Driver, ProviderClock, check, start_fake_twilio, write_portfolio
from tests.conftest import ROOT, always_open_policies, stack_env

RUN_DIR = ROOT / ".run"  # every process's output, for post-mortems

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="module")]

LAYOUT = {"gateways": 2, "workers": 2, "engines": 2, "action_servers": 2}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / 100


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scaled(redis_server, tmp_path_factory):
    policies = always_open_policies(tmp_path_factory.mktemp("scale-policies"))
    env = stack_env(redis_server.rsplit("/", 1)[0] + "/6", NUDGE_POLICIES_DIR=str(policies))
    settings = Settings.from_env(env)
    client = aioredis.from_url(settings.redis_url)
    await client.flushdb()
    clock = ProviderClock()
    runner, _ = await start_fake_twilio(settings, clock)
    RUN_DIR.mkdir(exist_ok=True)
    log = open(RUN_DIR / "test-scale-out.log", "w")
    stack = Stack(settings, env, out=log)
    try:
        await asyncio.to_thread(stack.start_services, **LAYOUT)
        yield stack, settings, client, clock
    finally:
        await asyncio.to_thread(stack.stop)
        await runner.cleanup()
        await client.aclose()
        log.close()


@pytest.mark.timeout(420)
async def test_two_of_everything_answer_every_message_once_in_order(scaled):
    stack, settings, client, clock = scaled
    with tempfile.TemporaryDirectory() as tmp:
        debtors = write_portfolio(Path(tmp) / "load.csv", "S", 90, pool_number=70, burst_share=0.3)
        report = await import_file(Path(tmp) / "load.csv",
                                   RedisDebtorStore(client, Keys(settings.key_prefix)),
                                   as_of=date.today())
    assert not report.errors
    pids = stack.pids()
    assert sorted(pids) == sorted(["actions1", "actions2", "engine1", "engine2", "gateway1",
                                   "gateway2", "worker1", "worker2"])
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}

    driver = Driver(stack.gateway_urls, public_url=settings.webhook_base_url,
                    auth_token=settings.twilio_auth_token, account_sid=settings.twilio_account_sid,
                    clock=clock)
    await driver.run(debtors, rate=6, seconds=30, drain_seconds=120)

    assert driver.bad_status() == {}, "every webhook was accepted by its gateway"
    result = await check(client, Keys(settings.key_prefix).transcript, debtors, clock)
    assert result.ok, result.summary()
    assert result.inbound == len(driver.sent) >= 150
    # every reply reached the provider exactly once
    assert sum(clock.created.values()) == len(clock.created) >= len(driver.sent)
    # and every process took part: each gateway took its half of the webhooks (round-robin),
    # each worker, engine and action server spent CPU on them
    accepted = driver.accepted_by_gateway()
    assert min(accepted.values()) >= len(driver.sent) // 2 - 1, accepted
    busy = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()
            if not name.startswith("gateway")}
    idle = [name for name, seconds in busy.items() if seconds < 0.2]
    assert not idle, f"processes that did no work: {idle} ({busy})"
