"""Identity checks on real Redis: methods in turn, attempts shared across doors, lock and
expiry by the clock given."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.arrangement_policy import VerificationPolicy
from bot.core.identity import answer_matches
from service.identity import IdentityChecks
from service.keys import Keys

PERSON = SimpleNamespace(id="D-1", date_of_birth=date(1985, 1, 31), postcode="1012 AB",
                         reference="NWM-2026-62403")
TWO_STEPS = VerificationPolicy(methods=("date_of_birth", "postcode"), max_attempts=3,
                               valid_for_minutes=60, lock_minutes=30)
T0 = 1_800_000_000.0


@pytest_asyncio.fixture
async def checks(redis_url):
    client = aioredis.from_url(redis_url)
    yield IdentityChecks(client, Keys())
    await client.aclose()


@pytest.mark.parametrize("method, answer, ok", [
    ("date_of_birth", "31-01-1985", True), ("date_of_birth", "31 januari 1985", True),
    ("date_of_birth", "31. Januar 1985", True), ("date_of_birth", "30-01-1985", False),
    ("date_of_birth", "", False), ("postcode", "1012ab", True), ("postcode", "1012 AC", False),
    ("reference", "nwm 2026 62403", True), ("reference", "NWM-2026-6240", False),
])
def test_answers(method, answer, ok):
    assert answer_matches(method, answer, PERSON) is ok


@pytest.mark.asyncio
async def test_every_method_in_turn_then_verified_until_it_expires(checks):
    first = await checks.next_question("D-1", "chat", TWO_STEPS, T0)
    assert (first.method, first.step, first.steps) == ("date_of_birth", 1, 2)
    second = await checks.answer(PERSON, "chat", TWO_STEPS, "31-01-1985", T0)
    assert (second.outcome, second.method, second.step) == ("next", "postcode", 2)
    assert not await checks.is_verified("D-1", "chat", T0)
    done = await checks.answer(PERSON, "chat", TWO_STEPS, "1012 AB", T0)
    assert done.outcome == "verified"
    assert await checks.is_verified("D-1", "chat", T0 + 59 * 60)
    assert not await checks.is_verified("D-1", "chat", T0 + 60 * 60 + 1)   # expired
    assert not await checks.is_verified("D-1", "page:abc", T0)              # another scope


@pytest.mark.asyncio
async def test_wrong_answers_count_across_doors_and_lock_both(checks):
    assert (await checks.answer(PERSON, "chat", TWO_STEPS, "01-01-1990", T0)).attempts_left == 2
    assert (await checks.answer(PERSON, "page:s1", TWO_STEPS, "02-02-1990", T0)).attempts_left == 1
    locked = await checks.answer(PERSON, "chat", TWO_STEPS, "03-03-1990", T0)
    assert locked.outcome == "locked"
    # even the right answer is refused while locked, on either door
    assert (await checks.answer(PERSON, "page:s1", TWO_STEPS, "31-01-1985", T0 + 60)).outcome == "locked"
    assert await checks.locked_until("D-1", T0) == T0 + 30 * 60
    after = await checks.answer(PERSON, "chat", TWO_STEPS, "31-01-1985", T0 + 30 * 60 + 1)
    assert after.outcome == "next" and after.attempts_left == 3


@pytest.mark.asyncio
async def test_a_right_answer_resets_the_count(checks):
    await checks.answer(PERSON, "chat", TWO_STEPS, "01-01-1990", T0)
    await checks.answer(PERSON, "chat", TWO_STEPS, "31-01-1985", T0)
    assert (await checks.answer(PERSON, "chat", TWO_STEPS, "1012 AB", T0)).outcome == "verified"
    again = await checks.next_question("D-1", "page:s2", TWO_STEPS, T0)
    assert again.attempts_left == 3
