"""The agent inbox through the gateway's real app, on a real Redis with the demo portfolio:
the queue, atomic claims, replies through the contact rules, what each role sees, notes,
outcomes recorded by hand, hand-back, live updates."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from service import appkeys as K
from service.arrangements import ArrangementBook
from service.audit import AuditLog
from service.console.inbox import DESK
from service.engine_outbox import EngineOutbox

pytestmark = pytest.mark.asyncio

OLIVER = "D-EN-001"      # Northwind Mobile, early, sms, GBP 248.50, +44 7400 123001


async def escalate(console, debtor_id: str = OLIVER, reason: str = "request_human") -> None:
    await console.app[DESK].conversations.escalate(debtor_id, reason)


async def claimed_by(console, person, debtor_id: str = OLIVER):
    await escalate(console, debtor_id)
    response = await person.post(f"/console/api/conversations/{debtor_id}/claim")
    assert response.status == 200
    return response


async def audit(console):
    return await AuditLog(console.redis, console.app[K.KEYS], console.settings.pseudonym_key).entries()


async def test_the_queue_shows_why_how_urgent_and_how_long(console):
    await escalate(console, OLIVER, "request_human")
    await escalate(console, "D-DE-001", "vulnerability")
    alice = await console.login("alice")
    rows = (await (await alice.get("/console/api/inbox")).json())["conversations"]
    assert [r["id"] for r in rows] == ["D-DE-001", OLIVER]        # the vulnerable first
    oliver = rows[1]
    assert (oliver["reason"], oliver["priority"], oliver["segment"], oliver["channel"],
            oliver["language"], oliver["agent"]) == ("request_human", 5, "early", "sms", "en", None)
    assert oliver["waiting_seconds"] >= 0
    page = await (await alice.get("/console/inbox")).text()
    assert "Oliver Bennett" in page and "request human" in page


async def test_two_agents_claiming_at_once_one_wins(console):
    await escalate(console)
    alice, bob = await console.login("alice"), await console.login("bob")
    first, second = await asyncio.gather(
        alice.post(f"/console/api/conversations/{OLIVER}/claim"),
        bob.post(f"/console/api/conversations/{OLIVER}/claim"))
    assert sorted([first.status, second.status]) == [200, 409]
    loser = second if second.status == 409 else first
    assert "already claimed by" in (await loser.json())["error"]
    actions = [e["action"] for e in await audit(console)]
    assert actions.count("conversation.claim") == 1 and "conversation.claim_refused" in actions


async def test_a_conversation_not_waiting_cannot_be_claimed(console):
    alice = await console.login("alice")
    response = await alice.post(f"/console/api/conversations/{OLIVER}/claim")
    assert response.status == 409
    assert "not waiting" in (await response.json())["error"]


async def test_the_owner_replies_on_the_debtors_channel_and_the_engine_hears_of_it(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    response = await alice.post(f"/console/api/conversations/{OLIVER}/reply",
                                json={"text": "Hello Oliver, this is Alice."})
    assert response.status == 200 and (await response.json())["verdict"] == "send"
    transcript = await console.app[DESK].conversations.transcript(OLIVER)
    sent = [e for _, e in transcript if e.get("direction") == "out"]
    assert sent[-1]["template"] == "agent_message" and sent[-1]["channel"] == "sms"
    assert sent[-1]["body"].startswith("Hello Oliver, this is Alice.")
    assert "STOP" in sent[-1]["body"]                      # the footer with the opt-out line
    # the bot turn waits in the engine outbox, and a job will write it into the tracker
    outbox = EngineOutbox(console.redis, console.app[K.KEYS])
    assert await outbox.pending(OLIVER) == 1
    queued = await console.redis.zrange(console.settings.queue_name, 0, -1)
    jobs = [await console.redis.get(b"arq:job:" + j) for j in queued]
    assert any(b"flush_engine_events" in (job or b"") for job in jobs)
    # another agent may not write in alice's conversation
    bob = await console.login("bob")
    response = await bob.post(f"/console/api/conversations/{OLIVER}/reply", json={"text": "Hi"})
    assert response.status == 409 and "claim it first" in (await response.json())["error"]


async def test_a_refused_send_comes_back_with_its_reason(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    await console.app[DESK].processor.rules.stop_states.set(OLIVER, "attorney", source="test")
    response = await alice.post(f"/console/api/conversations/{OLIVER}/reply", json={"text": "Hello"})
    assert response.status == 422
    body = await response.json()
    assert body["verdict"] == "refuse" and body["reason"] == "stop_state:attorney" and body["detail"]


@pytest.mark.parametrize("text, status", [("", 400), ("   ", 400), ("x" * 1601, 400)])
async def test_empty_or_overlong_replies_are_refused(console, text, status):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    response = await alice.post(f"/console/api/conversations/{OLIVER}/reply", json={"text": text})
    assert response.status == status


async def test_agents_see_contact_details_masked_and_supervisors_in_full(console):
    await escalate(console)
    alice, sam = await console.login("alice"), await console.login("sam")
    masked = (await (await alice.get(f"/console/api/conversations/{OLIVER}")).json())["case"]
    full = (await (await sam.get(f"/console/api/conversations/{OLIVER}")).json())["case"]
    assert full["phone"] == "+447400123001" and full["date_of_birth"] == "2001-09-24"
    assert "123001" not in masked["phone"] and masked["phone"].endswith("01")
    assert masked["date_of_birth"] == "hidden" and "oliver.bennett" not in masked["email"]
    assert (masked["balance"], masked["currency"], masked["reference"]) == ("248.50", "GBP", "NWM-2026-62403")
    views = [e for e in await audit(console) if e["action"] == "debtor.view"]
    assert [(v["actor"], v["detail"]["contact_details"]) for v in views] == [("alice", False), ("sam", True)]


async def test_vulnerability_detail_is_for_supervisors_only(console):
    desk = console.app[DESK]
    await escalate(console, OLIVER, "vulnerability")
    await desk.processor.rules.stop_states.set(OLIVER, "vulnerability", source="intent")
    alice, sam = await console.login("alice"), await console.login("sam")
    await alice.post(f"/console/api/conversations/{OLIVER}/claim")
    response = await alice.post(f"/console/api/conversations/{OLIVER}/notes",
                                json={"text": "Mentioned a recent bereavement.", "vulnerability": True})
    assert response.status == 201
    await alice.post(f"/console/api/conversations/{OLIVER}/notes", json={"text": "Call back Friday."})
    as_agent = await (await alice.get(f"/console/api/conversations/{OLIVER}")).json()
    as_supervisor = await (await sam.get(f"/console/api/conversations/{OLIVER}")).json()
    notes = lambda data: [e["text"] for e in data["transcript"] if e.get("name") == "note"]  # noqa: E731
    assert notes(as_agent) == ["Call back Friday."]
    assert notes(as_supervisor) == ["Mentioned a recent bereavement.", "Call back Friday."]
    assert as_agent["case"]["flags"]["protected"] is True
    assert "detail" not in as_agent["case"]["flags"]
    assert as_supervisor["case"]["flags"]["detail"]["vulnerability"]["source"] == "intent"


async def test_a_promise_recorded_by_hand_becomes_the_arrangement(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    when = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    response = await alice.post(f"/console/api/conversations/{OLIVER}/outcome",
                                json={"kind": "promise", "amount": "100.00", "date": when})
    assert response.status == 201, await response.text()
    current = await ArrangementBook(console.redis, console.app[K.KEYS]).current(OLIVER)
    assert (current.kind, current.state, current.total_minor) == ("promise", "accepted", 10000)
    assert current.instalments[0].due.isoformat() == when
    events = [e for _, e in await console.app[DESK].conversations.transcript(OLIVER)
              if e.get("name") == "agent_outcome"]
    assert events[-1]["outcome"] == "promise" and events[-1]["by"] == "alice"


@pytest.mark.parametrize("body, error", [
    ({"kind": "promise", "amount": "abc", "date": "2099-01-01"}, "amount"),
    ({"kind": "promise", "amount": "10.001", "date": "2099-01-01"}, "decimals"),
    ({"kind": "promise", "amount": "10", "date": "2099-01-01"}, "policy allows a promise up to"),
    ({"kind": "promise", "amount": "9999", "date": "tomorrow"}, "YYYY-MM-DD"),
    ({"kind": "plan", "instalments": 0, "first_date": "2099-01-01"}, "1 to 120"),
    ({"kind": "plan", "instalments": 120, "first_date": "2099-01-01"}, "outside the creditor's policy"),
    ({"kind": "surrender"}, "kind must be"),
])
async def test_outcomes_outside_policy_or_malformed_are_refused(console, body, error):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    response = await alice.post(f"/console/api/conversations/{OLIVER}/outcome", json=body)
    assert response.status == 400
    assert error in (await response.json())["error"]
    assert await ArrangementBook(console.redis, console.app[K.KEYS]).current(OLIVER) is None


async def test_a_plan_inside_policy_is_agreed(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    first = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    response = await alice.post(f"/console/api/conversations/{OLIVER}/outcome",
                                json={"kind": "plan", "instalments": 2, "frequency": "monthly",
                                      "first_date": first})
    assert response.status == 201, await response.text()
    current = await ArrangementBook(console.redis, console.app[K.KEYS]).current(OLIVER)
    assert (current.kind, current.state, len(current.instalments), current.total_minor) == (
        "plan", "accepted", 2, 24850)


async def test_hand_back_returns_the_conversation_to_the_bot(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    bob = await console.login("bob")
    assert (await bob.post(f"/console/api/conversations/{OLIVER}/handback")).status == 409
    response = await alice.post(f"/console/api/conversations/{OLIVER}/handback")
    assert response.status == 200
    state = await console.app[DESK].conversations.get(OLIVER)
    assert (state.owner, state.agent) == ("bot", None)
    assert await console.redis.zcard(console.app[K.KEYS].agent_queue) == 0
    batches = await console.redis.lrange(console.app[K.KEYS].engine_outbox(OLIVER), 0, -1)
    assert [e["event"] for e in json.loads(batches[-1])] == ["resume", "action"]


async def test_no_hand_back_while_a_stop_state_forbids_the_bot(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    await console.app[DESK].processor.rules.stop_states.set(OLIVER, "dispute", source="intent")
    response = await alice.post(f"/console/api/conversations/{OLIVER}/handback")
    assert response.status == 409 and "dispute" in (await response.json())["error"]


async def test_canned_replies_come_in_the_debtors_language_with_the_agents_name(console):
    await escalate(console, "D-NL-001")
    alice = await console.login("alice")
    data = await (await alice.get("/console/api/conversations/D-NL-001")).json()
    greeting = [c for c in data["canned"] if c["key"] == "canned_greeting"][0]["text"]
    assert greeting.startswith("Hallo") and "Alice" in greeting
    assert {c["key"] for c in data["canned"]} == {"canned_greeting", "canned_looking_into_it",
                                                  "canned_payment_options", "canned_support"}


@pytest.mark.parametrize("text, encoding, segments", [
    ("Hello", "GSM-7", 1), ("x" * 161, "GSM-7", 2), ("Grüße 😊", "UCS-2", 1), ("€" * 80, "GSM-7", 1)])
async def test_the_sms_counter(console, text, encoding, segments):
    alice = await console.login("alice")
    data = await (await alice.post("/console/api/sms-segments", json={"text": text})).json()
    assert (data["encoding"], data["segments"]) == (encoding, segments)


async def test_the_conversation_streams_new_entries_live(console):
    alice = await console.login("alice")
    await claimed_by(console, alice)
    stream = await alice.get(f"/console/api/conversations/{OLIVER}/stream")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    await asyncio.sleep(0.2)
    await console.app[DESK].conversations.add_event(OLIVER, "note", {"by": "bob", "text": "hi"})
    await console.app[DESK].conversations.add_event(OLIVER, "note", {
        "by": "sam", "text": "secret", "vulnerability": True})
    await console.app[DESK].conversations.add_event(OLIVER, "note", {"by": "bob", "text": "after"})
    seen = []
    while len(seen) < 2:
        line = await asyncio.wait_for(stream.content.readline(), 5)
        if line.startswith(b"data: "):
            seen.append(json.loads(line[6:])["text"])
    assert seen == ["hi", "after"]        # the vulnerability note never reached the agent
    stream.close()


async def test_the_inbox_stream_announces_queue_changes_without_content(console):
    alice = await console.login("alice")
    stream = await alice.get("/console/api/inbox/stream")
    await asyncio.sleep(0.2)
    await escalate(console)
    while True:
        line = await asyncio.wait_for(stream.content.readline(), 5)
        if line.startswith(b"data: "):
            break
    assert json.loads(line[6:]) == {"conversation": OLIVER, "name": "handoff"}
    stream.close()


async def test_a_stream_ends_when_its_session_is_logged_out(console, monkeypatch):
    from service.console import live
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.3)
    alice = await console.login("alice")
    stream = await alice.get("/console/api/inbox/stream")
    await (await console.login("alice")).post("/console/logout")   # another session: no effect
    await asyncio.sleep(0.5)
    assert not stream.content.at_eof()
    await alice.post("/console/logout")
    body = await asyncio.wait_for(stream.content.read(), 5)
    assert b"event: logout" in body


async def test_an_unknown_conversation_is_404(console):
    alice = await console.login("alice")
    assert (await alice.get("/console/api/conversations/D-XX-999")).status == 404
    assert (await alice.get("/console/conversations/D-XX-999")).status == 404


async def test_only_a_role_the_policy_names_lifts_a_stop_state(console):
    await console.app[DESK].processor.rules.stop_states.set(OLIVER, "dispute", source="intent")
    await console.app[DESK].processor.rules.stop_states.set(OLIVER, "hardship", source="intent")
    alice, sam = await console.login("alice"), await console.login("sam")
    case = (await (await alice.get(f"/console/api/conversations/{OLIVER}")).json())["case"]
    assert case["flags"]["liftable"] == ["hardship"]           # agents may lift hardship only
    refused = await alice.post(f"/console/api/conversations/{OLIVER}/stop-states/dispute/lift",
                               json={"note": "answered"})
    assert refused.status == 403 and "may not lift dispute" in (await refused.json())["error"]
    assert (await alice.post(f"/console/api/conversations/{OLIVER}/stop-states/hardship/lift",
                             json={"note": "plan agreed"})).status == 200
    assert (await sam.post(f"/console/api/conversations/{OLIVER}/stop-states/dispute/lift",
                           json={"note": "answered"})).status == 200
    assert await console.app[DESK].processor.rules.stop_states.active(OLIVER) == {}
    actions = [e["action"] for e in await audit(console)]
    assert "stop_state.lift_refused" in actions and actions.count("stop_state.lift") == 2
