"""A campaign through the whole product: started over the API, planned and sent by the worker
through the contact rules and the fake Twilio server, the engine told; a debtor answers and
the reply is credited to the campaign message; the next step waits in the job queue."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from service.debtor_store import RedisDebtorStore
from service.importer import import_file
from service.keys import Keys
from tests.e2e.helpers import DebtorPhone, templates

pytestmark = [pytest.mark.engine, pytest.mark.asyncio(loop_scope="function")]

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo_portfolio.csv"


@pytest_asyncio.fixture
async def cohort(product, tmp_path):
    """Six debtors of their own creditor (the test stack's segment e2e_campaign)."""
    rows = {r["id"]: r for r in csv.DictReader(DEMO.open())}
    # two debtors per language, with a phone (the segment writes by SMS)
    sources = [i for lang in ("EN", "NL", "DE")
               for i in [r for r in rows if r.startswith(f"D-{lang}-") and rows[r]["phone"]][:2]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(next(iter(rows.values()))))
    writer.writeheader()
    ids = []
    for n, source in enumerate(sources):
        row = dict(rows[source])
        row.update(id=f"E2E-CMP-{n}", creditor="E2E Campaign Creditor", segment="",
                   reference=f"E2E-CMP-{n:04d}", email=f"e2e.campaign{n}@example.org",
                   phone=row["phone"][:-3] + f"9{n:02d}", preferred_channel="sms")
        writer.writerow(row)
        ids.append(row["id"])
    path = tmp_path / "cohort.csv"
    path.write_text(out.getvalue())
    client = aioredis.from_url(product.settings.redis_url)
    keys = Keys(product.settings.key_prefix)
    report = await import_file(path, RedisDebtorStore(client, keys))
    assert not report.errors, report.errors
    yield ids, client, keys
    await client.aclose()


async def test_a_campaign_runs_end_to_end_and_a_reply_is_credited(product, cohort):
    ids, client, keys = cohort
    auth = {"Authorization": f"Bearer {product.env['NUDGE_API_TOKEN']}"}
    async with aiohttp.ClientSession(base_url=product.base_url, headers=auth) as api:
        response = await api.post("/api/campaigns", json={"segment": "e2e_campaign", "step": 1,
                                                          "by": "e2e"})
        assert response.status == 201, await response.text()
        campaign_id = (await response.json())["id"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = await (await api.get(f"/api/campaigns/{campaign_id}")).json()
            if status["state"] == "done":
                break
            await asyncio.sleep(0.5)
    assert status["state"] == "done", status
    assert status["counts"]["sent"] == len(ids) == status["handled"], status

    # every debtor got step 1 once, in a tone the segment allows, delivered by the fake Twilio
    for debtor_id in ids:
        async with DebtorPhone(product.base_url, debtor_id, "sms") as phone:
            sent = [e for e in await phone.transcript()
                    if e.get("direction") == "out" and e.get("template") == "reminder_first"]
        assert len(sent) == 1, sent
        assert sent[0]["tone"] in ("loss_aversion", "social_proof", "soft")
        touch = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.touch(debtor_id))).items()}
        assert (touch["segment"], touch["step"], touch["tone"]) == ("e2e_campaign", "1", sent[0]["tone"])

    async def delivered() -> int:
        counts = await client.hgetall(keys.outcome_counts)
        return sum(int(v) for k, v in counts.items()
                   if k.decode().startswith("e2e_campaign|1|") and k.decode().endswith("|delivered"))
    deadline = time.monotonic() + 30
    while await delivered() < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    assert await delivered() == len(ids)      # status callbacks from the fake Twilio, credited

    # a debtor answers: the engine knows the reminder went out, and the reply is credited
    async with DebtorPhone(product.base_url, ids[0], "sms") as phone:
        answer = await phone.say("can i pay in instalments")
    assert templates(answer) == ["ask_verification"]
    touch = {k.decode(): v.decode() for k, v in (await client.hgetall(keys.touch(ids[0]))).items()}
    assert touch.get("engaged") == "1" and "o:replied" in touch

    # the next step is a deferred job in the queue, a day after this one
    jobs = {j.decode(): s for j, s in await client.zrange(product.settings.queue_name, 0, -1,
                                                           withscores=True)}
    step_two = jobs.get(f"wf:{campaign_id}:2:1")
    assert step_two is not None and step_two / 1000 == pytest.approx(time.time() + 86400, abs=300)
