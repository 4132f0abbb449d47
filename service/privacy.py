"""Data protection: export everything held about a debtor, erase a debtor everywhere, and the
retention job that deletes what has outlived its period (../shared/domain-rules.md, "Data
protection (GDPR)"; docs/architecture.md, "Data protection").

Where a debtor lives (every key from service/keys.py unless said otherwise):

* the debtor document, the index set, the address index (`service/debtor_store.py`);
* their conversation (id = debtor id): state hash, transcript stream, pending list, agent queue;
  and conversations from their number before we knew it (`unknown-<digits>`, in the
  `unknown_senders` set);
* inbound message hashes `in:<id>` (found by their `conversation_id`), send-once markers
  `out:<id>`, `reminder_told:<id>`, entries of the global `outbox` and `events` streams;
* arrangement, promise, stop-states, contact logs, preferences, deferred messages;
* the engine's tracker `<engine prefix>:tracker:<sender>` and lock `<engine prefix>:lock:<sender>`
  (rasa/core/lock_store.py: `key_prefix + ":" + "lock:"`, then the conversation id);
* arq: `arq:job:<id>` / `arq:result:<id>` (pickled arguments naming the conversation),
  `arq:in-progress:<id>`, `arq:retry:<id>`, and the queue's sorted set;
* the audit log (pseudonyms only) and its pseudonym -> id lookup (`service/audit.py`).

Erasure, and what a reader can see meanwhile:

1. It takes the conversation's processing lock (the worker's), so no turn is half done.
2. It WATCHes every per-conversation key a writer touches (debtor, conversation, transcript,
   pending list, arrangement, promise, stop-states, preferences, tracker, address index),
   then finds everything (including scans of `in:*`, `deferred_msg:*`, the outbox and events
   streams and arq's keys), then deletes it all in ONE MULTI/EXEC. A reader sees the debtor
   whole or not at all. A message accepted meanwhile changes the transcript, so the
   transaction aborts and is redone with it.
3. After EXEC: the outbox/events streams are rebuilt without the deleted entries (XDEL only
   flags an entry: its bytes stay in memory and in RDB/AOF files; `compact_stream`), Redis is
   asked to rewrite its append-only file so the data leaves the disk too (`rewrite_persistence`),
   the audit lookup forgets the pseudonym (`AuditLog.forget_subject`), and one `debtor.erase`
   entry is appended with the pseudonym only.

Safe to re-run: a second run finds nothing, keeps the first tombstone (SET NX), and says
`already_erased`. A crash before EXEC changed nothing; after EXEC, a re-run finishes step 3.

Known windows (documented, not closed): a job a worker already took before the erasure (waiting
for the conversation lock) still ends after it, and arq then writes its result, whose pickled
arguments hold the debtor id, for `keep_result` (1 hour, with a Redis expiry); it holds no
contact data and no message, and a re-run removes it earlier. Deferred messages and arq jobs
are not WATCHed (global keys): one planned for the debtor between finding and EXEC survives
until a re-run. Backups of Redis files made before the erasure are out of reach here.

Kept on purpose: suppressions (keyed digests of the address, never the address: an opt-out must
outlive the person's record or a re-import would text someone who said stop); the audit entries
(pseudonymous, unlinked); a tombstone `Keys.tombstone(pseudonym)` with what bookkeeping law keeps.
"""

from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import deserialize_job_raw, deserialize_result
from redis.asyncio import Redis
from redis.exceptions import LockError, ResponseError, WatchError

from bot.core.debtors import Debtor
from service.audit import SYSTEM, AuditLog
from service.debtor_store import RedisDebtorStore
from service.keys import Keys
from service.routing import unknown_conversation_id
from service.settings import PROJECT_ROOT, Settings, SettingsError
from service.suppression import SuppressionStore

CHANNELS = ("sms", "whatsapp", "email")
PHONE_CHANNELS = ("sms", "whatsapp")
DAY = 86400.0
BATCH = 500
MAX_ATTEMPTS = 20
RETENTION_FILE = "retention.yml"   # in Settings.policies_dir (policies/ by default)


# --- small helpers ----------------------------------------------------------------------
def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json(value: Any) -> Any:
    """Parsed JSON if it is JSON, else the text."""
    text = _s(value)
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def _glob(text: str) -> str:
    """Escape a value for use inside a SCAN MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _tracker_key(settings: Settings, sender_id: str) -> str:
    return f"{settings.engine_key_prefix}:tracker:{sender_id}"


def _engine_lock_key(settings: Settings, sender_id: str) -> str:
    # rasa.core.lock_store.RedisLockStore: key_prefix + ":" + "lock:" + conversation id
    return f"{settings.engine_key_prefix}:lock:{sender_id}"


def _unknown_sender_key(keys: Keys) -> str:
    # service/processing.py writes this one without a Keys method
    return f"{keys.prefix}:unknown_senders"


def _require_key(settings: Settings) -> None:
    if not settings.pseudonym_key:
        raise SettingsError("NUDGE_PSEUDONYM_KEY is not set (run `make run` once, or set it)")


async def _scan(redis: Redis, pattern: str) -> list[str]:
    return [_s(k) async for k in redis.scan_iter(match=pattern, count=1000)]


async def _stream_entries(redis: Redis, key: str) -> list[tuple[str, Any]]:
    """Every entry of a stream (id, parsed `data` field), read in batches."""
    out: list[tuple[str, Any]] = []
    start = "-"
    while True:
        rows = await redis.xrange(key, min=start, max="+", count=BATCH)
        if not rows:
            return out
        for entry_id, fields in rows:
            data = {_s(k): _s(v) for k, v in fields.items()}
            out.append((_s(entry_id), _json(data.get("data", "")) if "data" in data else data))
        start = "(" + _s(rows[-1][0])
        if len(rows) < BATCH:
            return out


def _debtor_identifiers(debtor_id: str, debtor: Debtor | None) -> list[str]:
    """What names the person, for scrubbing free text the operator typed."""
    values = [debtor_id]
    if debtor is not None:
        values += [debtor.full_name, debtor.first_name, debtor.last_name, debtor.reference,
                   debtor.postcode, debtor.date_of_birth.isoformat(),
                   debtor.date_of_birth.strftime("%d-%m-%Y"), debtor.date_of_birth.strftime("%d.%m.%Y")]
        if debtor.phone:
            values += [debtor.phone, debtor.phone.lstrip("+")]
        if debtor.email:
            values.append(debtor.email)
    return sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True)


def _scrub(text: str, identifiers: list[str]) -> str:
    for value in identifiers:
        # whole words only: a first name "Ann" must not take "annual" apart
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", "[redacted]", text, flags=re.IGNORECASE)
    return text


# --- finding a debtor's footprint -------------------------------------------------------
@dataclass
class Footprint:
    """Where one debtor's data is, found by `_find`; keys grouped by record type."""

    debtor_id: str
    debtor: Debtor | None
    addresses: dict[str, str]
    conversations: list[str]
    unknown_conversations: list[str]
    keys: dict[str, list[str]] = field(default_factory=dict)
    message_ids: set[str] = field(default_factory=set)
    outbound_ids: set[str] = field(default_factory=set)
    outbox_entries: list[tuple[str, Any]] = field(default_factory=list)
    event_entries: list[tuple[str, Any]] = field(default_factory=list)
    business_event_entries: list[tuple[str, Any]] = field(default_factory=list)
    follow_up_scheduled: bool = False
    reference_indexed: str | None = None
    deferred: dict[str, dict[str, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)   # job id -> what we know
    queued_jobs: list[str] = field(default_factory=list)
    in_agent_queue: list[str] = field(default_factory=list)
    legacy_suppressions: list[tuple[str, str, str, str]] = field(default_factory=list)
    # campaigns (#6): queues naming the debtor, and the open success window of their touch
    campaign_queues: list[str] = field(default_factory=list)
    touch_open: bool = False

    def add(self, kind: str, *keys: str) -> None:
        bucket = self.keys.setdefault(kind, [])
        for key in keys:
            if key not in bucket:
                bucket.append(key)

    def is_empty(self) -> bool:
        return not (any(self.keys.values()) or self.outbox_entries or self.event_entries
                    or self.deferred or self.jobs or self.queued_jobs or self.in_agent_queue
                    or self.unknown_conversations or self.legacy_suppressions
                    or self.business_event_entries or self.follow_up_scheduled
                    or self.reference_indexed or self.campaign_queues or self.touch_open)


def watched_keys(keys: Keys, settings: Settings, debtor_id: str,
                 debtor: Debtor | None) -> list[str]:
    """The keys an erasure WATCHes: every per-debtor key a concurrent writer would touch."""
    watched = [keys.debtor(debtor_id), keys.conversation(debtor_id), keys.transcript(debtor_id),
               keys.pending(debtor_id), keys.arrangement(debtor_id), keys.promise(debtor_id),
               keys.stop_states(debtor_id), keys.preferences(debtor_id),
               keys.verification(debtor_id), keys.touch(debtor_id),
               _tracker_key(settings, debtor_id)]
    if debtor is not None:
        watched += [keys.debtor_by_address(kind, address)
                    for kind, address in debtor.addresses().items()]
    return watched


async def _find(redis: Redis, settings: Settings, debtor_id: str) -> Footprint:
    keys = Keys(settings.key_prefix)
    debtor = await RedisDebtorStore(redis, keys).get(debtor_id)
    addresses = debtor.addresses() if debtor else {}

    # conversations from their number or address before we knew them
    candidates = set()
    if addresses.get("phone"):
        phone = addresses["phone"]
        candidates |= {f"unknown-{phone.lstrip('+')}", f"unknown-{phone}",
                       unknown_conversation_id(settings.pseudonym_key, phone)}
    if addresses.get("email"):
        candidates |= {f"unknown-{addresses['email']}",
                       unknown_conversation_id(settings.pseudonym_key, addresses["email"])}
    members = [_s(m) async for m in redis.sscan_iter(_unknown_sender_key(keys))]
    unknown = sorted(m for m in members if m in candidates)
    # ...and those a retention run or crash left out of the set, by their keys
    for candidate in sorted(candidates - set(unknown)):
        if await redis.exists(keys.transcript(candidate), keys.conversation(candidate),
                              keys.pending(candidate)):
            unknown.append(candidate)
    conversations = [debtor_id, *unknown]
    fp = Footprint(debtor_id, debtor, addresses, conversations, unknown)

    if debtor is not None:
        fp.add("debtor", keys.debtor(debtor_id))
        for kind, address in addresses.items():
            key = keys.debtor_by_address(kind, address)
            if _s(await redis.get(key)) == debtor_id:
                fp.add("address_index", key)
    for kind, key in (("arrangement", keys.arrangement(debtor_id)),
                      ("promise", keys.promise(debtor_id)),
                      ("stop_states", keys.stop_states(debtor_id)),
                      ("preferences", keys.preferences(debtor_id)),
                      ("verification", keys.verification(debtor_id)),
                      ("campaign_touch", keys.touch(debtor_id)),
                      ("engine_outbox", keys.engine_outbox(debtor_id)),
                      ("whatsapp_opt_in", keys.whatsapp_opt_in(debtor_id))):
        if await redis.exists(key):
            fp.add(kind, key)
    fp.add("contact_logs", *await _scan(redis, keys.contact_log(_glob(debtor_id), "*")))

    conv_set = set(conversations)
    for conv in conversations:
        for kind, key in (("conversation", keys.conversation(conv)),
                          ("transcript", keys.transcript(conv)),
                          ("pending", keys.pending(conv))):
            if await redis.exists(key):
                fp.add(kind, key)
        for kind, key in (("engine_tracker", _tracker_key(settings, conv)),
                          ("engine_lock", _engine_lock_key(settings, conv))):
            if await redis.exists(key):
                fp.add(kind, key)
        if await redis.zscore(keys.agent_queue, conv) is not None:
            fp.in_agent_queue.append(conv)
        for _, entry in await _stream_entries(redis, keys.transcript(conv)):
            if isinstance(entry, dict) and entry.get("kind") == "message" and entry.get("message_id"):
                (fp.outbound_ids if entry.get("direction") == "out" else fp.message_ids).add(
                    str(entry["message_id"]))
        fp.message_ids |= {_s(m) for m in await redis.lrange(keys.pending(conv), 0, -1)}

    # inbound message hashes: those the transcript names, and any other of these conversations
    inbound_keys = await _scan(redis, keys.inbound("*"))
    for offset in range(0, len(inbound_keys), BATCH):
        chunk = inbound_keys[offset:offset + BATCH]
        async with redis.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hget(key, "conversation_id")
            owners = await pipe.execute()
        prefix_len = len(keys.inbound(""))
        for key, owner in zip(chunk, owners):
            if _s(owner) in conv_set:
                fp.add("inbound_messages", key)
                fp.message_ids.add(key[prefix_len:])

    # the global streams: entries for these conversations or addressed to them
    address_values = set(addresses.values())
    for entry_id, entry in await _stream_entries(redis, keys.outbox):
        if isinstance(entry, dict) and (entry.get("conversation_id") in conv_set
                                        or str(entry.get("address", "")).lower() in address_values
                                        or entry.get("address") in address_values):
            fp.outbox_entries.append((entry_id, entry))
            if entry.get("message_id"):
                fp.outbound_ids.add(str(entry["message_id"]))
    for entry_id, entry in await _stream_entries(redis, keys.events):
        if isinstance(entry, dict) and (entry.get("conversation_id") in conv_set
                                        or entry.get("debtor_id") == debtor_id):
            fp.event_entries.append((entry_id, entry))
    # business events (arrangements, payments) name the debtor; the creditor got its copy
    for entry_id, entry in await _stream_entries(redis, keys.business_events):
        if isinstance(entry, dict) and entry.get("debtor_id") == debtor_id:
            fp.business_event_entries.append((entry_id, entry))
    fp.follow_up_scheduled = await redis.zscore(keys.arrangement_due, debtor_id) is not None
    fp.touch_open = await redis.zscore(keys.touch_open, debtor_id) is not None
    for queue in await _scan(redis, keys.campaign_queue("*")):
        if await redis.zscore(queue, debtor_id) is not None:
            fp.campaign_queues.append(queue)
    if debtor is not None and _s(await redis.hget(keys.debtor_references,
                                                   debtor.reference.upper())) == debtor_id:
        fp.reference_indexed = debtor.reference.upper()

    for message_id in sorted(fp.outbound_ids):
        for kind, key in (("outbound_markers", keys.outbound(message_id)),
                          ("delivery_records", keys.delivery(message_id)),
                          ("reminder_markers", keys.reminder_told(message_id))):
            if await redis.exists(key):
                fp.add(kind, key)

    # deferred messages held by the contact rules (service/sending.py: debtor_id and the plan)
    deferred_prefix = keys.deferred_message("")
    for key in await _scan(redis, keys.deferred_message("*")):
        data = {_s(k): _s(v) for k, v in (await redis.hgetall(key)).items()}
        plan = _json(data.get("plan", ""))
        plan = plan if isinstance(plan, dict) else {}
        if (data.get("debtor_id") == debtor_id or plan.get("debtor_id") == debtor_id
                or plan.get("conversation_id") in conv_set
                or str(plan.get("address", "")).lower() in address_values):
            fp.deferred[key[len(deferred_prefix):]] = data
            fp.add("deferred_messages", key)

    # opt-outs an older code path stored under the raw address instead of its digest
    for channel in CHANNELS:
        address = addresses.get("email" if channel == "email" else "phone")
        if address:
            legacy = keys.suppression(channel, address)
            value = await redis.get(legacy)
            if value is not None:
                fp.legacy_suppressions.append((channel, address, legacy, _s(value)))

    await _find_jobs(redis, settings, fp)
    return fp


async def _find_jobs(redis: Redis, settings: Settings, fp: Footprint) -> None:
    """arq jobs and results whose arguments or id name this debtor's conversations/messages."""
    names = set(fp.conversations) | fp.message_ids | fp.outbound_ids
    job_ids = {f"in:{m}" for m in fp.message_ids} | set(fp.outbound_ids)

    def about(job_id: str, args: Iterable[Any], kwargs: Mapping[str, Any]) -> bool:
        if job_id in job_ids or any(job_id.startswith(f"sweep:{c}:") for c in fp.conversations):
            return True
        values = [*args, *kwargs.values()]
        return any(isinstance(v, str) and v in names for v in values)

    for prefix in (job_key_prefix, result_key_prefix):
        for key in await _scan(redis, prefix + "*"):
            job_id = key[len(prefix):]
            raw = await redis.get(key)
            if raw is None:
                continue
            try:
                if prefix == job_key_prefix:
                    function, args, kwargs, tries, enqueued = deserialize_job_raw(raw)
                else:
                    result = deserialize_result(raw)
                    function, args, kwargs, enqueued = (result.function, result.args,
                                                        result.kwargs, result.enqueue_time)
            except Exception:  # noqa: BLE001 - unreadable: decide on the raw bytes
                function, args, kwargs, enqueued = "?", (), {}, None
                if any(name.encode() in raw for name in names):
                    args = tuple(n for n in names if n.encode() in raw)
            if about(job_id, args, kwargs):
                fp.jobs.setdefault(job_id, {"function": function,
                                            "enqueued": str(enqueued) if enqueued else None})
    for job_id in list(job_ids):
        if await redis.exists(job_key_prefix + job_id, result_key_prefix + job_id,
                              in_progress_key_prefix + job_id, retry_key_prefix + job_id):
            fp.jobs.setdefault(job_id, {"function": None, "enqueued": None})
    for job_id in fp.jobs:
        for kind, prefix in (("jobs", job_key_prefix), ("job_results", result_key_prefix),
                             ("job_markers", in_progress_key_prefix),
                             ("job_markers", retry_key_prefix)):
            if await redis.exists(prefix + job_id):
                fp.add(kind, prefix + job_id)
        if await redis.zscore(settings.queue_name, job_id) is not None:
            fp.queued_jobs.append(job_id)


# --- export -----------------------------------------------------------------------------
async def export_debtor(redis: Redis, settings: Settings, debtor_id: str, *,
                        actor: str = SYSTEM) -> dict[str, Any]:
    """Everything held about a debtor, as one JSON-serialisable dict (a subject access request,
    art. 15; data portability, art. 20). The export itself is audited before anything is read.
    Raises LookupError when no such debtor is held."""
    _require_key(settings)
    keys = Keys(settings.key_prefix)
    audit = AuditLog(redis, keys, settings.pseudonym_key)
    if not await redis.exists(keys.debtor(debtor_id)):
        raise LookupError(f"no debtor {debtor_id}")
    await audit.record(actor, "debtor.export", debtor_id=debtor_id)
    fp = await _find(redis, settings, debtor_id)
    debtor = fp.debtor

    async def transcript(conv: str) -> list[dict[str, Any]]:
        return [{"id": i, **(e if isinstance(e, dict) else {"data": e})}
                for i, e in await _stream_entries(redis, keys.transcript(conv))]

    async def hash_of(key: str) -> dict[str, Any]:
        return {_s(k): _json(v) for k, v in (await redis.hgetall(key)).items()}

    conversation = await hash_of(keys.conversation(debtor_id))
    score = await redis.zscore(keys.agent_queue, debtor_id)
    if score is not None:
        conversation["agent_queue_score"] = score

    inbound: dict[str, Any] = {}
    prefix_len = len(keys.inbound(""))
    for key in sorted(fp.keys.get("inbound_messages", [])):
        inbound[key[prefix_len:]] = await hash_of(key)

    contact_log: dict[str, list[dict[str, Any]]] = {}
    for key in fp.keys.get("contact_logs", []):
        channel = key.rsplit(":", 1)[-1]
        contact_log[channel] = [{"message_id": _s(m), "at": _iso(s)}
                                for m, s in await redis.zrange(key, 0, -1, withscores=True)]

    deferred = []
    for message_id, data in sorted(fp.deferred.items()):
        due = await redis.zscore(keys.deferred, message_id)
        deferred.append({"message_id": message_id, **{k: _json(v) for k, v in data.items()},
                         "due": _iso(due) if due is not None else None})

    suppression = SuppressionStore(redis, keys, settings.pseudonym_key)
    legacy = {(channel, address): value for channel, address, _, value in fp.legacy_suppressions}
    suppressions = []
    for channel in CHANNELS:
        address = fp.addresses.get("email" if channel == "email" else "phone")
        if address:
            reason = await suppression.reason(channel, address) or legacy.get((channel, address))
            suppressions.append({"channel": channel, "address": address,
                                 "suppressed": reason is not None, "reason": reason})

    raw_tracker = await redis.get(_tracker_key(settings, debtor_id))
    sent_markers = {}
    for key in fp.keys.get("outbound_markers", []):
        value = _s(await redis.get(key))
        sent_markers[key[len(keys.outbound("")):]] = _iso(float(value)) if _is_number(value) else value

    return {
        "debtor_id": debtor_id,
        "exported_at": _iso(time.time()),
        "exported_by": actor,
        "debtor": debtor.to_dict() if debtor else None,
        "conversation": conversation,
        "transcript": await transcript(debtor_id),
        "pending": [_s(m) for m in await redis.lrange(keys.pending(debtor_id), 0, -1)],
        "inbound_messages": inbound,
        "outbox": [{"id": i, **e} for i, e in fp.outbox_entries],
        "sent_markers": sent_markers,
        "events": [{"id": i, **e} for i, e in fp.event_entries],
        "arrangements": await hash_of(keys.arrangement(debtor_id)),
        "campaign_touch": await hash_of(keys.touch(debtor_id)),
        "campaigns": [queue.rsplit(":", 1)[-1] for queue in fp.campaign_queues],
        "business_events": [{"id": i, **e} for i, e in fp.business_event_entries],
        "promise": _json(await redis.get(keys.promise(debtor_id)))
        if await redis.exists(keys.promise(debtor_id)) else None,
        "stop_states": await hash_of(keys.stop_states(debtor_id)),
        "contact_log": contact_log,
        "preferences": await hash_of(keys.preferences(debtor_id)),
        "deferred_messages": deferred,
        "suppressions": suppressions,
        "engine_tracker": _json(raw_tracker) if raw_tracker is not None else None,
        "unknown_sender_conversations": {conv: await transcript(conv)
                                         for conv in fp.unknown_conversations},
        "jobs": [{"id": job_id, **info} for job_id, info in sorted(fp.jobs.items())],
        "audit": await audit.entries(debtor_id=debtor_id, count=100_000),
    }


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- erasure ----------------------------------------------------------------------------
@dataclass
class ErasureReport:
    """What an erasure deleted (counts per record type) and what it kept."""

    pseudonym: str
    erased_at: float
    deleted: dict[str, int]
    kept: dict[str, int]
    already_erased: bool
    tombstone_key: str
    persistence: str = ""   # what was asked of Redis's files (rewrite_persistence)

    @property
    def total_deleted(self) -> int:
        return sum(self.deleted.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "erased_at": _iso(self.erased_at), "total_deleted": self.total_deleted}


# Arrangement fields the bookkeeping record keeps: money and dates, nothing naming a person
# (not the arrangement id either: it starts with the debtor id).
_MONEY_FIELDS = ("kind", "state", "currency", "total_minor", "balance_minor", "frequency",
                 "accepted_on", "ended_on")
_INSTALMENT_FIELDS = ("number", "due", "amount_minor", "paid_minor")
_PAYMENT_FIELDS = ("payment_id", "paid_on", "amount", "currency", "source")


def _bookkeeping(debtor: Debtor | None, arrangements: dict[str, Any],
                 business_events: list[tuple[str, Any]]) -> dict[str, Any] | None:
    """Amounts and dates of money agreed and received: kept for the bookkeeping period.
    `arrangements` is the debtor's arrangement hash (service/arrangements.py), decoded."""
    agreed = [a for a in [*(arrangements.get("history") or []), arrangements.get("current")]
              if isinstance(a, dict)]
    payments = [e.get("data") or {} for _, e in business_events
                if isinstance(e, dict) and e.get("type") == "payment_received"]
    if not agreed and not payments:
        return None
    kept: dict[str, Any] = {
        "arrangements": [{**{k: a[k] for k in _MONEY_FIELDS if k in a},
                          "instalments": [{k: i[k] for k in _INSTALMENT_FIELDS if k in i}
                                          for i in a.get("instalments") or [] if isinstance(i, dict)]}
                         for a in agreed],
        "payments_received": [{k: p[k] for k in _PAYMENT_FIELDS if k in p} for p in payments],
    }
    if debtor is not None:
        kept["creditor"] = debtor.creditor   # whose books the money belongs in
        kept["currency"] = debtor.currency
    return kept


def _queue_erasure(pipe: Any, keys: Keys, settings: Settings, fp: Footprint,
                   suppression: SuppressionStore, debtor_id: str, in_index: bool,
                   erased_at: float) -> list[str]:
    """Queue every deletion in the open MULTI; return the record type of each queued command
    (a leading "_" marks one that is not a deletion)."""
    ops: list[str] = []
    # keep the opt-outs: an opt-out stored under the raw address moves to its digest
    for channel, address, legacy_key, value in fp.legacy_suppressions:
        record = json.dumps({"source": value or "opted_out", "at": erased_at})
        pipe.set(suppression.key(channel, address), record, nx=True)
        pipe.delete(legacy_key)
        ops += ["_suppression_kept", "legacy_suppressions"]
    for kind, found in sorted(fp.keys.items()):
        if found:
            pipe.delete(*found)
            ops.append(kind)
    if fp.debtor is not None or in_index:
        pipe.srem(keys.debtor_index, debtor_id)
        ops.append("debtor_index")
    for kind, key, members in (("agent_queue", keys.agent_queue, fp.in_agent_queue),
                               ("deferred_queue", keys.deferred, list(fp.deferred)),
                               ("queued_jobs", settings.queue_name, fp.queued_jobs)):
        if members:
            pipe.zrem(key, *members)
            ops.append(kind)
    if fp.unknown_conversations:
        pipe.srem(_unknown_sender_key(keys), *fp.unknown_conversations)
        ops.append("unknown_senders")
    if fp.follow_up_scheduled:
        pipe.zrem(keys.arrangement_due, debtor_id)
        ops.append("follow_up_schedule")
    if fp.touch_open:
        pipe.zrem(keys.touch_open, debtor_id)
        ops.append("campaign_success_window")
    for queue in fp.campaign_queues:
        pipe.zrem(queue, debtor_id)
        ops.append("campaign_queues")
    if fp.reference_indexed:
        pipe.hdel(keys.debtor_references, fp.reference_indexed)
        ops.append("reference_index")
    for kind, key, entries in (("outbox_entries", keys.outbox, fp.outbox_entries),
                               ("event_entries", keys.events, fp.event_entries),
                               ("business_event_entries", keys.business_events,
                                fp.business_event_entries)):
        if entries:
            pipe.xdel(key, *[entry_id for entry_id, _ in entries])
            ops.append(kind)
    return ops


# Rebuild a stream without its deleted entries: same ids, same last-generated id, then an
# atomic RENAME over the old one. Refuses streams with consumer groups (none of ours has one).
_COMPACT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
-- Consumer groups (the creditor webhooks read business events through one) are re-created on
-- the new stream. Their pending entries cannot be carried over, so a group restarts just
-- before its oldest pending entry: those entries are delivered again (at least once, never
-- lost; receivers de-duplicate by event id).
local function before(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if tonumber(seq) > 0 then return ms .. '-' .. string.format('%.0f', tonumber(seq) - 1) end
  return string.format('%.0f', tonumber(ms) - 1) .. '-18446744073709551615'
end
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, start
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then start = g[i + 1] end
  end
  local pending = redis.call('XPENDING', KEYS[1], name)
  if tonumber(pending[1]) > 0 then start = before(pending[2]) end
  table.insert(groups, {name, start})
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last = '0-0'
for i = 1, #info, 2 do if info[i] == 'last-generated-id' then last = info[i + 1] end end
redis.call('DEL', KEYS[2])
local start = '-'
while true do
  local rows = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do redis.call('XADD', KEYS[2], row[1], unpack(row[2])) end
  start = '(' .. rows[#rows][1]
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XSETID', KEYS[2], last)
  redis.call('RENAME', KEYS[2], KEYS[1])
end
for _, g in ipairs(groups) do
  redis.call('XGROUP', 'CREATE', KEYS[1], g[1], g[2], 'MKSTREAM')
end
return 1
"""


async def compact_stream(redis: Redis, key: str) -> bool:
    """Purge the bytes of deleted entries (XDEL only flags them). One Lua script, so readers see
    the old stream or the new one; it blocks Redis while it copies (about 1 s per million
    entries), which an erasure, rare and deliberate, can afford."""
    return int(await redis.eval(_COMPACT, 2, key, key + ":compacting")) == 1


async def rewrite_persistence(redis: Redis) -> str:
    """Ask Redis to rewrite its append-only file (or snapshot) now, so the erased data leaves the
    disk instead of waiting for the next automatic rewrite. Backups are not reached (docs)."""
    try:
        config = await redis.config_get("appendonly")
        if _s(config.get("appendonly") or config.get(b"appendonly")) == "yes":
            await redis.bgrewriteaof()
            return "aof_rewrite_started"
        save = await redis.config_get("save")
        if _s(save.get("save") or save.get(b"save")).strip():
            await redis.bgsave()
            return "snapshot_started"
        return "no_persistence"
    except ResponseError as error:   # a rewrite already running, or CONFIG not allowed (ACL)
        return f"not_started: {_s(str(error))[:80]}"



async def erase_debtor(redis: Redis, settings: Settings, debtor_id: str, *, actor: str,
                       reason: str, now: float | None = None) -> ErasureReport:
    """Erase a debtor across every store (art. 17), keeping only suppression digests, the
    pseudonymous audit entries and a restricted tombstone. Idempotent. Raises LookupError when
    nothing is held about that id and it was never erased (a typo should not make a tombstone)."""
    _require_key(settings)
    if not actor or not reason.strip():
        raise ValueError("an erasure needs the actor and a reason")
    keys = Keys(settings.key_prefix)
    audit = AuditLog(redis, keys, settings.pseudonym_key)
    suppression = SuppressionStore(redis, keys, settings.pseudonym_key)
    pseudonym = audit.pseudonym(debtor_id)
    tombstone_key = keys.tombstone(pseudonym)
    erased_at = time.time() if now is None else now

    lock = redis.lock(keys.conversation_lock(debtor_id),
                      timeout=max(60.0, settings.conversation_lock_seconds * 4))
    # The worker's own lock: no turn of this conversation is half done while we erase it.
    if not await lock.acquire(blocking_timeout=settings.conversation_lock_seconds * 2):
        raise RuntimeError(f"{debtor_id}: the conversation is being processed; try again")
    try:
        for _ in range(MAX_ATTEMPTS):
            async with redis.pipeline(transaction=True) as pipe:
                try:
                    debtor = await RedisDebtorStore(redis, keys).get(debtor_id)
                    await pipe.watch(*watched_keys(keys, settings, debtor_id, debtor))
                    fp = await _find(redis, settings, debtor_id)
                    if (fp.debtor is None) != (debtor is None):
                        continue   # changed between the read and the WATCH
                    if fp.unknown_conversations:
                        await pipe.watch(*[key for c in fp.unknown_conversations
                                           for key in (keys.transcript(c), keys.pending(c))])
                    tombstone_exists = bool(await redis.exists(tombstone_key))
                    if fp.is_empty() and not tombstone_exists:
                        await pipe.unwatch()
                        raise LookupError(f"nothing is held about {debtor_id}")
                    identifiers = _debtor_identifiers(debtor_id, fp.debtor)
                    arrangements = {_s(k): _json(v) for k, v in
                                    (await redis.hgetall(keys.arrangement(debtor_id))).items()}
                    tombstone = {"pseudonym": pseudonym, "erased_at": erased_at,
                                 "erased_at_iso": _iso(erased_at), "actor": actor,
                                 "reason": _scrub(reason.strip(), identifiers)}
                    money = _bookkeeping(fp.debtor, arrangements, fp.business_event_entries)
                    if money:
                        tombstone["bookkeeping"] = money
                    in_other_index = fp.debtor is None and bool(
                        await redis.sismember(keys.debtor_index, debtor_id))
                    pipe.multi()
                    ops = _queue_erasure(pipe, keys, settings, fp, suppression, debtor_id,
                                         in_other_index, erased_at)
                    pipe.set(tombstone_key, json.dumps(tombstone), nx=True)
                    ops.append("_tombstone")
                    results = await pipe.execute()
                except WatchError:
                    continue
            break
        else:
            raise RuntimeError(f"{debtor_id}: gave up after {MAX_ATTEMPTS} concurrent changes")
    finally:
        try:
            await lock.release()
        except LockError:
            pass   # it expired during a long erasure: nothing of ours to release

    # Streams only flag XDEL'd entries; their bytes stay in memory and in RDB/AOF files until
    # the stream is rebuilt, so rebuild the ones we deleted from (same ids, atomic rename).
    if fp.outbox_entries:
        await compact_stream(redis, keys.outbox)
    if fp.event_entries:
        await compact_stream(redis, keys.events)
    if fp.business_event_entries:
        await compact_stream(redis, keys.business_events)
    persistence = await rewrite_persistence(redis)

    deleted: dict[str, int] = {}
    for kind, result in zip(ops, results):
        if not kind.startswith("_"):
            deleted[kind] = deleted.get(kind, 0) + int(result or 0)
    already_erased = tombstone_exists and not any(deleted.values())

    await audit.forget_subject(debtor_id)
    await audit.record(actor, "debtor.erase", pseudonym=pseudonym,
                       reason=_scrub(reason.strip(), identifiers),
                       deleted=sum(deleted.values()), repeat=already_erased)

    kept_suppressions = 0
    for channel in CHANNELS:
        address = fp.addresses.get("email" if channel == "email" else "phone")
        if address and await suppression.is_suppressed(channel, address):
            kept_suppressions += 1
    kept = {"suppressions": kept_suppressions,
            "audit_entries": len(await audit.entries(debtor_id=debtor_id, count=100_000)),
            "tombstone": int(bool(await redis.exists(tombstone_key)))}
    return ErasureReport(pseudonym, erased_at, {k: v for k, v in deleted.items() if v}, kept,
                         already_erased, tombstone_key, persistence)


# --- retention --------------------------------------------------------------------------
RETENTION_TYPES = ("inbound_messages", "outbox", "outbound_markers", "transcripts",
                   "engine_trackers", "unknown_senders", "domain_events", "tombstones",
                   "audit_log")
# Never below the bookkeeping period (7 years, with two leap days): the law sets these.
LEGAL_MINIMUM_DAYS = {"tombstones": 2557, "audit_log": 2557}


class RetentionPolicyError(ValueError):
    """policies/retention.yml is missing something or says something impossible."""


@dataclass(frozen=True)
class RetentionPolicy:
    days: Mapping[str, int]

    def seconds(self, record_type: str) -> float:
        return self.days[record_type] * DAY

    @classmethod
    def from_mapping(cls, raw: Any, *, source: str = "retention.yml") -> "RetentionPolicy":
        def fail(where: str, message: str) -> RetentionPolicyError:
            return RetentionPolicyError(f"{source}: {where}: {message}")

        if not isinstance(raw, Mapping):
            raise fail("(top)", "expected a mapping with `periods:`")
        unknown = set(raw) - {"periods"}
        if unknown:
            raise fail(", ".join(sorted(map(str, unknown))), "unknown key; expected only `periods`")
        periods = raw.get("periods")
        if not isinstance(periods, Mapping):
            raise fail("periods", "expected a mapping of record type -> days")
        for name in periods:
            if name not in RETENTION_TYPES:
                close = difflib.get_close_matches(str(name), RETENTION_TYPES, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise fail(f"periods.{name}", f"unknown record type{hint}; known: "
                           + ", ".join(RETENTION_TYPES))
        days: dict[str, int] = {}
        for name in RETENTION_TYPES:
            if name not in periods:
                raise fail(f"periods.{name}", "missing: every record type needs a period in days")
            value = periods[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(f"periods.{name}", f"expected a whole number of days >= 1, got {value!r}")
            minimum = LEGAL_MINIMUM_DAYS.get(name)
            if minimum and value < minimum:
                raise fail(f"periods.{name}", f"{value} days is shorter than the legal minimum of "
                           f"{minimum} days (7 years, the bookkeeping period); never trim it early")
            days[name] = value
        return cls(days)

    @classmethod
    def load(cls, path: Path | None = None) -> "RetentionPolicy":
        path = Path(path) if path is not None else PROJECT_ROOT / "policies" / RETENTION_FILE
        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise RetentionPolicyError(f"{path}: cannot read: {error}") from error
        return cls.from_mapping(raw, source=str(path))


def load_retention_policy(settings: Settings | None = None, *,
                          path: Path | None = None) -> RetentionPolicy:
    """The retention policy, validated: `path`, else `retention.yml` in `settings.policies_dir`
    when that directory has one, else the shipped policies/retention.yml (a policies directory
    may override only the contact rules, as the end-to-end tests' does)."""
    if path is None and settings is not None:
        candidate = settings.policies_dir / RETENTION_FILE
        path = candidate if candidate.exists() else None
    return RetentionPolicy.load(path)


def _epoch(now: float | datetime) -> float:
    return now.timestamp() if isinstance(now, datetime) else float(now)


async def run_retention(redis: Redis, settings: Settings, policy: RetentionPolicy,
                        now: float | datetime, *, dry_run: bool = False) -> dict[str, int]:
    """Delete every record past its period at `now` (epoch seconds or an aware datetime);
    return how many per record type. Uses no clock of its own: the same data and `now` give
    the same result. With `dry_run`, only counts."""
    keys = Keys(settings.key_prefix)
    at = _epoch(now)
    cutoff = {name: at - policy.seconds(name) for name in RETENTION_TYPES}
    counts = {name: 0 for name in RETENTION_TYPES}
    open_conversations = {_s(m) for m in await redis.zrange(keys.agent_queue, 0, -1)}

    # streams: entries older than the period, by their time-based ids
    for name, key in (("outbox", keys.outbox), ("domain_events", keys.events),
                      ("audit_log", keys.audit)):
        min_id = f"{int(cutoff[name] * 1000)}-0"
        if dry_run:
            counts[name] = len(await redis.xrange(key, max="(" + min_id))
        else:
            counts[name] = int(await redis.xtrim(key, minid=min_id, approximate=False))

    # unknown senders first (a shorter period than transcripts): member, conversation, messages
    expired_unknown: list[str] = []
    for member in sorted({_s(m) async for m in redis.sscan_iter(_unknown_sender_key(keys))}):
        last = await _last_activity(redis, keys, member)
        if last is None or last < cutoff["unknown_senders"]:
            expired_unknown.append(member)
    counts["unknown_senders"] = len(expired_unknown)
    if expired_unknown and not dry_run:
        await _drop_conversations(redis, settings, keys, expired_unknown, unknown=True)

    # inbound message states, by the time the message was received
    for key in await _scan(redis, keys.inbound("*")):
        message = _json(await redis.hget(key, "message"))
        received = message.get("received_at") if isinstance(message, dict) else None
        if isinstance(received, (int, float)) and received < cutoff["inbound_messages"]:
            counts["inbound_messages"] += 1
            if not dry_run:
                await redis.delete(key)

    # send-once markers, by the time they were set (their value), with their delivery records
    # (a record still due is kept: it has not reached its provider yet)
    for key in await _scan(redis, keys.outbound("*")):
        value = _s(await redis.get(key))
        if _is_number(value) and float(value) < cutoff["outbound_markers"]:
            message_id = key[len(keys.outbound("")):]
            if await redis.zscore(keys.delivery_due, message_id) is not None:
                continue
            counts["outbound_markers"] += 1
            if not dry_run:
                await redis.delete(key, keys.delivery(message_id))

    # transcripts of conversations inactive for the period (never one an agent still owns)
    prefix_len = len(keys.transcript(""))
    for key in await _scan(redis, keys.transcript("*")):
        conversation_id = key[prefix_len:]
        if conversation_id in open_conversations:
            continue
        rows = await redis.xrevrange(key, count=1)
        if rows and _entry_ms(_s(rows[0][0])) / 1000 < cutoff["transcripts"]:
            counts["transcripts"] += 1
            if not dry_run:
                await redis.delete(key, keys.conversation(conversation_id))

    # the engine's trackers, by their last event
    tracker_prefix = _tracker_key(settings, "")
    for key in await _scan(redis, _tracker_key(settings, "*")):
        sender = key[len(tracker_prefix):]
        if sender in open_conversations:
            continue
        tracker = _json(await redis.get(key))
        stamps = [e.get("timestamp") for e in (tracker.get("events") or [])
                  if isinstance(e, dict)] if isinstance(tracker, dict) else []
        stamps = [s for s in stamps if isinstance(s, (int, float))]
        if stamps and max(stamps) < cutoff["engine_trackers"]:
            counts["engine_trackers"] += 1
            if not dry_run:
                await redis.delete(key, _engine_lock_key(settings, sender))

    # tombstones, by erasure time
    for key in await _scan(redis, keys.tombstone("*")):
        record = _json(await redis.get(key))
        erased = record.get("erased_at") if isinstance(record, dict) else None
        if isinstance(erased, (int, float)) and erased < cutoff["tombstones"]:
            counts["tombstones"] += 1
            if not dry_run:
                await redis.delete(key)
    return counts


async def _last_activity(redis: Redis, keys: Keys, conversation_id: str) -> float | None:
    rows = await redis.xrevrange(keys.transcript(conversation_id), count=1)
    if rows:
        return _entry_ms(_s(rows[0][0])) / 1000
    updated = await redis.hget(keys.conversation(conversation_id), "updated")
    return float(updated) if updated is not None and _is_number(_s(updated)) else None


async def _drop_conversations(redis: Redis, settings: Settings, keys: Keys,
                              conversations: list[str], *, unknown: bool) -> None:
    """Delete conversations whole: state, transcript, pending, their messages and markers, the
    engine's tracker, and their outbox entries (one pass over the outbox for all of them)."""
    wanted = set(conversations)
    doomed: list[str] = []
    for conv in conversations:
        for _, entry in await _stream_entries(redis, keys.transcript(conv)):
            if isinstance(entry, dict) and entry.get("message_id"):
                message_id = str(entry["message_id"])
                if entry.get("direction") == "out":
                    doomed += [keys.outbound(message_id), keys.delivery(message_id),
                               keys.reminder_told(message_id)]
                else:
                    doomed.append(keys.inbound(message_id))
        doomed += [keys.transcript(conv), keys.conversation(conv), keys.pending(conv),
                   _tracker_key(settings, conv), _engine_lock_key(settings, conv)]
    outbox_ids = [entry_id for entry_id, entry in await _stream_entries(redis, keys.outbox)
                  if isinstance(entry, dict) and entry.get("conversation_id") in wanted]
    async with redis.pipeline(transaction=True) as pipe:
        for offset in range(0, len(doomed), BATCH):
            pipe.delete(*doomed[offset:offset + BATCH])
        if outbox_ids:
            pipe.xdel(keys.outbox, *outbox_ids)
        if unknown:
            pipe.srem(_unknown_sender_key(keys), *conversations)
        await pipe.execute()
    if outbox_ids:
        await compact_stream(redis, keys.outbox)   # XDEL alone leaves the bytes (see erasure)
