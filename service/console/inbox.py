"""The agent inbox: conversations handed to people, taken over, answered and handed back.

- The queue: every escalated conversation with its reason, priority, waiting time, segment,
  channel and language, most urgent first; who claimed it. Live over server-sent events.
- A conversation: the debtor's case (masked contact details unless the role needs them), the
  arrangements and promises, the flags (stop-states; what a vulnerability is only for
  supervisors), the whole transcript across channels with each message's delivery state.
- Actions, each audited: claim (atomic, service/conversations.py), reply on the debtor's
  channel through the contact rules (service/agent.py; a held or refused send comes back with
  its reason), canned replies rendered from templates, notes (a note may be marked as
  vulnerability detail: supervisors only), a promise or a plan recorded by hand (inside the
  creditor's policy, service/arrangements.py), an outcome, hand back to the bot.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from bot.core.arrangement_policy import PolicyBook, load_policy_book, money_to_minor
from bot.core.debtors import Debtor, minor_to_decimal
from bot.core.negotiation import Offer
from bot.core.plans import build_plan, plan_inside_policy
from bot.core.segments import SegmentBook, load_segment_book
from channels.sms_encoding import analyse
from service import appkeys as K
from service.agent import AgentDesk
from service.arrangements import ArrangementBook, money
from service.console import auth, live
from service.contact_rules import StopStateError
from service.conversations import PRIORITY, ClaimError
from service.templates import TemplateError

DESK = web.AppKey("console_desk", AgentDesk)
SEGMENTS = web.AppKey("console_segments", SegmentBook)
POLICIES = web.AppKey("console_policies", PolicyBook)
ARRANGEMENTS = web.AppKey("console_arrangements", ArrangementBook)

CANNED = ("canned_greeting", "canned_looking_into_it", "canned_payment_options", "canned_support")
# Outcomes an agent records without a plan or promise (the transcript and the audit log keep them).
OUTCOMES = ("callback_arranged", "dispute_logged", "paid_elsewhere_claimed", "no_agreement",
            "vulnerability_referred")
# Transcript events that change the queue, relayed to every open inbox.
QUEUE_EVENTS = frozenset({"handoff", "claimed", "handed_back"})
MAX_REPLY = 1600       # Twilio's body limit; the template lint refuses longer SMS anyway
MAX_NOTE = 4000


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/inbox", inbox_page)
    app.router.add_get("/console/api/inbox", inbox_api)
    app.router.add_get("/console/api/inbox/stream", inbox_stream)
    app.router.add_get("/console/conversations/{conversation_id}", conversation_page)
    app.router.add_get("/console/api/conversations/{conversation_id}", conversation_api)
    app.router.add_get("/console/api/conversations/{conversation_id}/stream", conversation_stream)
    app.router.add_post("/console/api/conversations/{conversation_id}/claim", claim)
    app.router.add_post("/console/api/conversations/{conversation_id}/reply", reply)
    app.router.add_post("/console/api/conversations/{conversation_id}/notes", add_note)
    app.router.add_post("/console/api/conversations/{conversation_id}/outcome", record_outcome)
    app.router.add_post("/console/api/conversations/{conversation_id}/handback", hand_back)
    app.router.add_post("/console/api/conversations/{conversation_id}/stop-states/{state}/lift",
                        lift_stop_state)
    app.router.add_post("/console/api/sms-segments", sms_segments)
    app.cleanup_ctx.append(_services)


async def _services(app: web.Application):
    settings = app[K.SETTINGS]
    # No engine client: the gateway never calls the engine; the agent's turns reach the
    # tracker through the engine outbox and the worker (service/engine_outbox.py).
    app[DESK] = AgentDesk(settings, app[K.REDIS], None)
    app[SEGMENTS] = load_segment_book(settings.policies_dir / "segments.yml")
    app[POLICIES] = load_policy_book(settings.policies_dir / "arrangements.yml")
    app[ARRANGEMENTS] = ArrangementBook(app[K.REDIS], app[K.KEYS])
    yield


# --- the queue ------------------------------------------------------------------------------
@auth.requires("inbox.view")
async def inbox_page(request: web.Request) -> web.Response:
    return auth.render(request, "console/inbox.html", {"rows": await _queue_rows(request)})


@auth.requires("inbox.view")
async def inbox_api(request: web.Request) -> web.Response:
    return web.json_response({"conversations": await _queue_rows(request), "now": time.time()})


async def _queue_rows(request: web.Request) -> list[dict[str, Any]]:
    """The queue in two round trips whatever its length: the conversations' hashes in one
    pipeline, their debtors in one MGET (bench/console.py)."""
    redis, keys = request.app[K.REDIS], request.app[K.KEYS]
    desk: AgentDesk = request.app[DESK]
    now = time.time()
    ids = [_s(c) for c in await redis.zrange(keys.agent_queue, 0, -1)]
    async with redis.pipeline(transaction=False) as pipe:
        for conversation_id in ids:
            pipe.hgetall(keys.conversation(conversation_id))
        hashes = await pipe.execute()
    debtors = await desk.debtors.get_many(ids)
    today = dt.date.today()
    rows = []
    for conversation_id, data, debtor in zip(ids, hashes, debtors, strict=True):
        raw = {_s(k): _s(v) for k, v in data.items()}
        waiting_since = float(raw["waiting_since"]) if raw.get("waiting_since") else None
        reason = raw.get("reason") or "unknown"
        rows.append({
            "id": conversation_id,
            "name": _display_name(debtor),
            "reason": reason,
            "priority": int(raw.get("priority") or PRIORITY.get(reason, 5)),
            "waiting_seconds": round(now - waiting_since) if waiting_since else None,
            "segment": _segment(request, debtor, today),
            "channel": raw.get("channel") or (debtor.preferred_channel if debtor else ""),
            "language": raw.get("language") or (debtor.language if debtor else ""),
            "agent": raw.get("agent") or None,
        })
    return rows


@auth.requires("inbox.view")
async def inbox_stream(request: web.Request) -> web.StreamResponse:
    """Tells open inboxes that the queue changed (which conversation, what happened); the page
    fetches the queue again. No message content goes over this stream."""
    async def only_queue_changes(payload: dict[str, Any], channel: str) -> dict[str, Any] | None:
        if payload.get("kind") != "event" or payload.get("name") not in QUEUE_EVENTS:
            return None
        return {"conversation": channel.rsplit(":", 1)[-1], "name": payload["name"]}

    keys = request.app[K.KEYS]
    return await live.stream(request, pattern=keys.events_channel("*"), transform=only_queue_changes)


# --- one conversation -----------------------------------------------------------------------
@auth.requires("inbox.view")
async def conversation_page(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    debtor = await request.app[DESK].debtors.get(conversation_id)
    if debtor is None and not conversation_id.startswith("unknown-"):
        return auth.error(request, 404, f"No conversation {conversation_id}.")
    return auth.render(request, "console/conversation.html",
                       {"conversation_id": conversation_id, "outcomes": OUTCOMES,
                        "title": _display_name(debtor) if debtor else conversation_id})


@auth.requires("inbox.view")
async def conversation_api(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    desk: AgentDesk = request.app[DESK]
    debtor = await desk.debtors.get(conversation_id)
    if debtor is None and not conversation_id.startswith("unknown-"):
        return web.json_response({"error": f"no conversation {conversation_id}"}, status=404)
    me = auth.user(request)
    state = await desk.conversations.get(conversation_id)
    entries = [(i, e) for i, e in await desk.conversations.transcript(conversation_id)
               if _visible(request, e)]
    unmasked = auth.allowed(request, "debtor.contact")
    await auth.audit(request, "debtor.view", debtor_id=debtor.id if debtor else None,
                     conversation=conversation_id, contact_details=unmasked)
    return web.json_response({
        "conversation": {"id": conversation_id, "owner": state.owner, "reason": state.reason,
                         "agent": state.agent, "channel": state.channel, "language": state.language,
                         "waiting_since": state.waiting_since, "mine": state.agent == me.username},
        "case": await _case(request, debtor) if debtor else None,
        "transcript": [{"id": i, **_shown(request, e)} for i, e in entries],
        "canned": await _canned(request, debtor) if debtor else [],
        "outcomes": OUTCOMES,
        "may": {"contact": unmasked, "vulnerability": auth.allowed(request, "vulnerability.view")},
    })


@auth.requires("inbox.view")
async def conversation_stream(request: web.Request) -> web.StreamResponse:
    conversation_id = request.match_info["conversation_id"]
    keys = request.app[K.KEYS]

    async def visible_entries(payload: dict[str, Any], channel: str) -> dict[str, Any] | None:
        return _shown(request, payload) if _visible(request, payload) else None

    return await live.stream(request, channel=keys.events_channel(conversation_id),
                             transform=visible_entries)


def _visible(request: web.Request, entry: dict[str, Any]) -> bool:
    """Vulnerability notes are for supervisors only."""
    if entry.get("kind") == "event" and entry.get("name") == "note" and entry.get("vulnerability"):
        return auth.allowed(request, "vulnerability.view")
    return True


def _shown(request: web.Request, entry: dict[str, Any]) -> dict[str, Any]:
    """A transcript entry as the console shows it: no raw addresses for roles that may not
    see them."""
    shown = dict(entry)
    if not auth.allowed(request, "debtor.contact"):
        for field in ("address", "from", "to"):
            if field in shown and isinstance(shown[field], str):
                shown[field] = _mask(shown[field])
    return shown


async def _case(request: web.Request, debtor: Debtor) -> dict[str, Any]:
    desk: AgentDesk = request.app[DESK]
    book: ArrangementBook = request.app[ARRANGEMENTS]
    today = desk.processor.local_today(debtor, time.time())
    unmasked = auth.allowed(request, "debtor.contact")
    stop_states = await desk.processor.rules.stop_states.active(debtor.id)
    hardship = await book.hardship_noted(debtor.id)
    protected = bool(stop_states) or hardship
    rules = desk.processor.rules.stop_states.policy.stop_states
    role = auth.user(request).role
    flags: dict[str, Any] = {"protected": protected, "stop_states": sorted(stop_states),
                             "liftable": sorted(n for n in stop_states if role in rules[n].lift_roles)}
    if auth.allowed(request, "vulnerability.view"):
        flags["detail"] = {name: {"since": record.get("since"), "source": record.get("source"),
                                  "by": record.get("by")} for name, record in stop_states.items()}
        flags["hardship"] = hardship
    current = await book.current(debtor.id)
    history = await book.history(debtor.id)
    return {
        "id": debtor.id,
        "name": debtor.full_name,
        "reference": debtor.reference,
        "creditor": debtor.creditor,
        "balance": money(debtor.balance_minor, debtor.currency),
        "currency": debtor.currency,
        "due_date": debtor.due_date.isoformat(),
        "days_past_due": debtor.days_past_due(today),
        "segment": _segment(request, debtor),
        "language": debtor.language,
        "preferred_channel": debtor.preferred_channel,
        "phone": debtor.phone if unmasked else _mask(debtor.phone),
        "email": debtor.email if unmasked else _mask(debtor.email),
        "date_of_birth": debtor.date_of_birth.isoformat() if unmasked else "hidden",
        "postcode": debtor.postcode if unmasked else _mask(debtor.postcode),
        "flags": flags,
        "arrangement": _arrangement(current) if current else None,
        "history": [_arrangement(a) for a in history[-10:]],
    }


def _arrangement(arr) -> dict[str, Any]:
    return {"id": arr.id, "kind": arr.kind, "state": arr.state, "frequency": arr.frequency,
            "total": money(arr.total_minor, arr.currency),
            "outstanding": money(arr.outstanding_minor, arr.currency),
            "created_on": arr.created_on, "ended_on": arr.ended_on,
            "instalments": [{"number": i.number, "date": i.due.isoformat(),
                             "amount": money(i.amount_minor, arr.currency),
                             "paid": money(i.paid_minor, arr.currency)}
                            for i in arr.instalments[:24]]}


async def _canned(request: web.Request, debtor: Debtor) -> list[dict[str, str]]:
    """The canned replies, rendered for this debtor in their language, with this agent's name."""
    desk: AgentDesk = request.app[DESK]
    me = auth.user(request)
    renderer = desk.processor.renderer
    out = []
    for key in CANNED:
        try:
            rendered = renderer.render(key, channel="sms", language=debtor.language,
                                       variables={"first_name": debtor.first_name,
                                                  "agent_name": me.username.capitalize()})
        except TemplateError:
            continue  # a broken canned template is the editor's problem, not the agent's
        out.append({"key": key, "title": key.removeprefix("canned_").replace("_", " "),
                    "text": rendered.body.strip()})
    return out


# --- actions --------------------------------------------------------------------------------
@auth.requires("conversation.work")
async def claim(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    me = auth.user(request)
    try:
        await request.app[DESK].conversations.claim(conversation_id, me.username)
    except ClaimError as problem:
        await auth.audit(request, "conversation.claim_refused", debtor_id=_debtor_id(conversation_id),
                         reason=str(problem).split(" ", 2)[-1][:60])
        return web.json_response({"error": str(problem)}, status=409)
    await auth.audit(request, "conversation.claim", debtor_id=_debtor_id(conversation_id))
    return web.json_response({"claimed": conversation_id, "agent": me.username})


@auth.requires("conversation.work")
async def reply(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    text = _text_field(await auth.json_body(request), MAX_REPLY, empty="write a message first")
    if isinstance(text, web.Response):
        return text
    me = auth.user(request)
    try:
        decision = await request.app[DESK].reply(conversation_id, me.username, text.strip())
    except LookupError as problem:
        return web.json_response({"error": str(problem)}, status=409)
    except TemplateError as problem:
        return web.json_response({"error": f"not sent: {problem}"}, status=422)
    status = {"send": 200, "defer": 202, "refuse": 422}[decision.verdict]
    return web.json_response({"verdict": decision.verdict, "reason": decision.reason,
                              "detail": decision.detail,
                              "until": decision.until.isoformat() if decision.until else None},
                             status=status)


@auth.requires("conversation.work")
async def add_note(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    body = await auth.json_body(request)
    text = _text_field(body, MAX_NOTE, empty="the note is empty")
    if isinstance(text, web.Response):
        return text
    if await _missing(request, conversation_id):
        return web.json_response({"error": f"no conversation {conversation_id}"}, status=404)
    vulnerability = bool(body.get("vulnerability"))
    me = auth.user(request)
    await request.app[DESK].conversations.add_event(conversation_id, "note", {
        "by": me.username, "text": text.strip(), "vulnerability": vulnerability})
    await auth.audit(request, "conversation.note", debtor_id=_debtor_id(conversation_id),
                     vulnerability=vulnerability)
    return web.json_response({"noted": True}, status=201)


@auth.requires("conversation.work")
async def record_outcome(request: web.Request) -> web.Response:
    """A promise to pay or an instalment plan agreed with the debtor by the agent (inside the
    creditor's policy, like the bot's), or an outcome without one."""
    conversation_id = request.match_info["conversation_id"]
    body = await auth.json_body(request)
    kind = body.get("kind")
    desk: AgentDesk = request.app[DESK]
    me = auth.user(request)
    state = await desk.conversations.get(conversation_id)
    if state.owner != "agent" or state.agent != me.username:
        return web.json_response({"error": "claim the conversation first"}, status=409)
    debtor = await desk.debtors.get(conversation_id)
    if debtor is None:
        return web.json_response({"error": f"no debtor {conversation_id}"}, status=404)
    today = desk.processor.local_today(debtor, time.time())
    policy = request.app[POLICIES].for_debtor(debtor.creditor, _segment(request, debtor))
    book: ArrangementBook = request.app[ARRANGEMENTS]
    try:
        if kind == "promise":
            amount_minor = _amount(body.get("amount"), debtor)
            when = _date(body.get("date"), today)
            latest = today + dt.timedelta(days=policy.promises.horizon_days)
            if when > latest:
                raise ValueError(f"the creditor's policy allows a promise up to {latest.isoformat()}")
            if amount_minor > debtor.balance_minor:
                raise ValueError("the promise is more than the balance")
            arr = await book.make_promise(debtor, amount_minor, when, today,
                                          grace_days=policy.promises.grace_days,
                                          reminder_days_before=policy.promises.reminder_days_before)
            detail: dict[str, Any] = {"arrangement": arr.id, "date": when.isoformat(),
                                      "amount": money(amount_minor, debtor.currency)}
        elif kind == "plan":
            count = body.get("instalments")
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 120:
                raise ValueError("instalments: a whole number from 1 to 120")
            frequency = body.get("frequency") or policy.plans.default_frequency
            if frequency not in policy.plans.frequencies:
                raise ValueError(f"frequency: one of {', '.join(policy.plans.frequencies)}")
            first = _date(body.get("first_date"), today)
            # the policy's weekend rule moves a due date off a weekend, as the bot's plans do
            plan = build_plan(debtor.balance_minor, count, frequency, first, policy.plans.weekend)
            outside = plan_inside_policy(plan, debtor.balance_minor, policy.plans, today, debtor.currency)
            if outside:
                raise ValueError("outside the creditor's policy: " + ", ".join(outside))
            arr = await _agree_plan(book, debtor, plan, today, policy)
            detail = {"arrangement": arr.id, "instalments": count, "frequency": frequency,
                      "first_date": first.isoformat()}
        elif kind in OUTCOMES:
            detail = {}
        else:
            raise ValueError(f"kind must be promise, plan or one of {', '.join(OUTCOMES)}")
    except ValueError as problem:
        return web.json_response({"error": str(problem)}, status=400)
    await desk.conversations.add_event(conversation_id, "agent_outcome",
                                       {"by": me.username, "outcome": kind, **detail})
    await auth.audit(request, "conversation.outcome", debtor_id=debtor.id, outcome=kind, **detail)
    return web.json_response({"recorded": kind, **detail}, status=201)


async def _agree_plan(book: ArrangementBook, debtor: Debtor, plan, today: dt.date, policy):
    offer = Offer("plan", sum(plan.amounts_minor), plan.amounts_minor, plan.dates, plan.frequency)
    await book.propose(debtor, offer, today, grace_days=policy.follow_up.grace_days,
                       reminder_days_before=policy.follow_up.instalment_reminder_days_before)
    return await book.accept(debtor, today)


@auth.requires("conversation.work")
async def hand_back(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    me = auth.user(request)
    desk: AgentDesk = request.app[DESK]
    state = await desk.conversations.get(conversation_id)
    if state.owner != "agent" or (state.agent and state.agent != me.username):
        return web.json_response({"error": "only the agent who claimed it may hand it back"},
                                 status=409)
    try:
        await desk.hand_back(conversation_id, me.username)
    except LookupError as problem:
        return web.json_response({"error": str(problem)}, status=409)
    return web.json_response({"handed_back": conversation_id})


@auth.requires("conversation.work")
async def lift_stop_state(request: web.Request) -> web.Response:
    """Lift a stop-state (the dispute answered, the hardship handled): only a role the contact
    policy names for that state may; StopStates checks it and audits a refusal too."""
    conversation_id, state = request.match_info["conversation_id"], request.match_info["state"]
    body = await auth.json_body(request)
    me = auth.user(request)
    try:
        await request.app[DESK].processor.rules.stop_states.lift(
            conversation_id, state, by=me.username, role=me.role, note=str(body.get("note", ""))[:500])
    except StopStateError as problem:
        status = 403 if "may not lift" in str(problem) else 409
        return web.json_response({"error": str(problem)}, status=status)
    await request.app[DESK].conversations.add_event(conversation_id, "stop_state_lifted",
                                                    {"state": state, "by": me.username})
    return web.json_response({"lifted": state})


@auth.requires("account.self")
async def sms_segments(request: web.Request) -> web.Response:
    """What a text costs as SMS, for the counters under the reply box and in the editor (the
    same code the lint and the fake Twilio count with)."""
    body = await auth.json_body(request)
    text = body.get("text")
    if not isinstance(text, str) or len(text) > 20000:
        return web.json_response({"error": "text: a string up to 20000 characters"}, status=400)
    info = analyse(text)
    return web.json_response({"encoding": info.encoding, "segments": info.segments,
                              "characters": info.characters,
                              "non_gsm": list(info.non_gsm_characters)[:10]})


# --- helpers --------------------------------------------------------------------------------
def _text_field(body: dict[str, Any], limit: int, *, empty: str) -> str | web.Response:
    """The body's `text`, or the 400 that says what is wrong with it."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return web.json_response({"error": empty}, status=400)
    if len(text) > limit:
        return web.json_response({"error": f"at most {limit} characters"}, status=400)
    return text


def _segment(request: web.Request, debtor: Debtor | None, today: dt.date | None = None) -> str:
    if debtor is None:
        return ""
    segment = request.app[SEGMENTS].segment_of(debtor, today or dt.date.today())
    return segment.name if segment else ""


def _display_name(debtor: Debtor | None) -> str:
    if debtor is None:
        return "unknown sender"
    return debtor.full_name


def _mask(value: str | None) -> str:
    """Enough to recognise, not enough to use: +44 ••••••• 23, o•••@e•••.com."""
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.partition("@")
        name, dot, tld = domain.rpartition(".")
        return f"{local[:1]}•••@{(name or tld)[:1]}•••{dot}{tld if name else ''}"
    if value.startswith("+"):
        return value[:3] + " " + "•" * max(len(value) - 5, 3) + " " + value[-2:]
    return value[:1] + "•" * max(len(value) - 1, 3)


def _amount(raw: Any, debtor: Debtor) -> int:
    try:
        amount = Decimal(str(raw).strip().replace(",", "."))
    except (InvalidOperation, ValueError):
        raise ValueError("amount: a number such as 50 or 49.99") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("amount: more than zero")
    minor = money_to_minor(amount, debtor.currency)
    if minor_to_decimal(minor, debtor.currency) != amount:
        raise ValueError(f"amount: too many decimals for {debtor.currency}")
    return minor


def _date(raw: Any, today: dt.date) -> dt.date:
    try:
        day = dt.date.fromisoformat(str(raw))
    except ValueError:
        raise ValueError("date: YYYY-MM-DD") from None
    if day < today:
        raise ValueError("the date is in the past")
    return day


async def _missing(request: web.Request, conversation_id: str) -> bool:
    if conversation_id.startswith("unknown-"):
        return False
    return await request.app[DESK].debtors.get(conversation_id) is None


def _debtor_id(conversation_id: str) -> str | None:
    return None if conversation_id.startswith("unknown-") else conversation_id


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
