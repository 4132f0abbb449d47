"""Stop-states are lifted only by a person whose role the policy names; people authenticate
with argon2id hashes; every change is in the audit log. Real Redis; the CLI through typer."""

from __future__ import annotations

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from typer.testing import CliRunner

from service.audit import AuditLog
from service.cli import app
from service.contact_rules import ContactConfig, StopStateError, StopStates
from service.keys import Keys
from service.users import UserError, Users

SECRET = "stop-state-test"


@pytest_asyncio.fixture
async def stores(redis_url):
    redis = aioredis.from_url(redis_url)
    keys = Keys()
    audit = AuditLog(redis, keys, SECRET)
    yield StopStates(redis, keys, audit, ContactConfig.load().policy), Users(redis, keys), audit
    await redis.aclose()


@pytest.mark.asyncio
async def test_only_named_roles_lift_a_stop_state(stores):
    states, _users, audit = stores
    assert await states.set("D-EN-001", "dispute", source="intent:dispute")
    assert not await states.set("D-EN-001", "dispute", source="intent:dispute")  # once
    with pytest.raises(StopStateError, match="a agent may not lift dispute"):
        await states.lift("D-EN-001", "dispute", by="alice", role="agent")
    assert "dispute" in await states.active("D-EN-001")
    await states.lift("D-EN-001", "dispute", by="sam", role="supervisor", note="answered")
    assert await states.active("D-EN-001") == {}
    actions = [(e["actor"], e["action"]) for e in await audit.entries(debtor_id="D-EN-001")]
    assert actions == [("system", "stop_state.set"), ("alice", "stop_state.lift_refused"),
                       ("sam", "stop_state.lift")]


@pytest.mark.asyncio
async def test_hardship_may_be_lifted_by_an_agent_and_lets_the_bot_answer(stores):
    states, _users, _audit = stores
    await states.set("D-EN-002", "hardship", source="intent:hardship")
    assert await states.blocking_bot("D-EN-002") == []
    await states.set("D-EN-002", "attorney", source="prerule:attorney:en")
    assert await states.blocking_bot("D-EN-002") == ["attorney"]
    await states.lift("D-EN-002", "hardship", by="alice", role="agent")


@pytest.mark.asyncio
async def test_unknown_states_are_refused(stores):
    states, _users, _audit = stores
    with pytest.raises(StopStateError):
        await states.set("D-EN-001", "sulking", source="test")


@pytest.mark.asyncio
async def test_users_authenticate_with_argon2id(stores, redis_url):
    _states, users, _audit = stores
    await users.add("sam", "supervisor", "correct horse battery")
    stored = await aioredis.from_url(redis_url).hget(Keys().user("sam"), "hash")
    assert stored.startswith(b"$argon2id$")
    assert await users.authenticate("sam", "correct horse battery") == "supervisor"
    for name, password in (("sam", "wrong password!!"), ("nobody", "correct horse battery")):
        with pytest.raises(UserError, match="unknown user or wrong password"):
            await users.authenticate(name, password)
    with pytest.raises(UserError, match="already exists"):
        await users.add("sam", "agent", "another long password")
    with pytest.raises(UserError, match="role"):
        await users.add("kim", "boss", "another long password")
    with pytest.raises(UserError, match="12 characters"):
        await users.add("kim", "agent", "short")


def test_the_cli_lifts_only_for_an_authorised_person(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("NUDGE_PSEUDONYM_KEY", SECRET)
    runner = CliRunner()
    for user, role in (("alice", "agent"), ("sam", "supervisor")):
        result = runner.invoke(app, ["users", "add", user, "--role", role],
                               env={"NUDGE_PASSWORD": f"{user}-password-long"})
        assert result.exit_code == 0, result.output
    import asyncio

    async def set_state():
        redis = aioredis.from_url(redis_url)
        await StopStates(redis, Keys(), AuditLog(redis, Keys(), SECRET),
                         ContactConfig.load().policy).set("D-NL-001", "bankruptcy", source="test")
        await redis.aclose()

    asyncio.run(set_state())
    refused = runner.invoke(app, ["stop", "lift", "D-NL-001", "bankruptcy", "--by", "alice"],
                            env={"NUDGE_PASSWORD": "alice-password-long"})
    assert refused.exit_code == 1 and "may not lift bankruptcy" in refused.output
    wrong = runner.invoke(app, ["stop", "lift", "D-NL-001", "bankruptcy", "--by", "sam"],
                          env={"NUDGE_PASSWORD": "not-sams-password"})
    assert wrong.exit_code == 1 and "wrong password" in wrong.output
    lifted = runner.invoke(app, ["stop", "lift", "D-NL-001", "bankruptcy", "--by", "sam",
                                 "--note", "discharged"], env={"NUDGE_PASSWORD": "sam-password-long"})
    assert lifted.exit_code == 0, lifted.output
    listed = runner.invoke(app, ["stop", "list", "D-NL-001"])
    assert "no stop-states" in listed.output
