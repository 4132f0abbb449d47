"""Business events: what happened in a case that a creditor or a report cares about (an offer
made, an arrangement accepted, an instalment paid or missed, a payment received...).

They go to one append-only Redis stream, ``Keys.business_events``, which nothing trims: it is
the record creditors are told from (service/creditor_webhooks.py) and exports are made of.
Each entry has one field, ``data``: the event as JSON

    {"id": "<uuid4 hex or the caller's id>", "type": "arrangement_accepted",
     "debtor_id": "D-EN-001", "creditor": "Northwind Mobile",
     "occurred_at": "2026-05-06T10:00:00.000Z", "data": {"amount": "25.00", ...}}

Amounts inside ``data`` are decimal strings ("25.00"), never floats: a float cannot hold most
cent amounts exactly, and a creditor's ledger must not receive 24.999999. Passing a float is an
error here, so the mistake surfaces in the code that made it.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Collection, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any

from redis.asyncio import Redis

from service.keys import Keys
from service.logs import get_logger
from service.tone_outcomes import ToneOutcomes, outcome_of_business_event

log = get_logger("business_events")

EXPORT_BATCH = 500
CSV_COLUMNS = ("id", "type", "occurred_at", "debtor_id", "creditor", "data")

# Check-and-append in one step: two retries of a job running at once must not both append.
# KEYS[1] the stream, KEYS[2] the event id's marker; ARGV[1] the event JSON.
# Returns {1, entry id} when appended, {0, entry id of the earlier append} when not.
_APPEND_ONCE = """
local existing = redis.call('GET', KEYS[2])
if existing then return {0, existing} end
local entry = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
redis.call('SET', KEYS[2], entry)
return {1, entry}
"""


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: one fixed shape, sortable as text."""
    if moment.tzinfo is None:
        raise ValueError("occurred_at must carry a time zone (a naive time is ambiguous)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_no_floats(value: Any, path: str = "data") -> None:
    if isinstance(value, float):
        raise TypeError(f"{path} is a float ({value!r}); pass amounts as Decimal or a decimal "
                        "string such as '25.00'")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_no_floats(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_no_floats(item, f"{path}[{index}]")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot put a {type(value).__name__} into a business event")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_entry(entry_id: bytes | str, fields: dict) -> tuple[str, dict[str, Any]]:
    raw = fields.get(b"data", fields.get("data"))
    return _text(entry_id), json.loads(raw)


class BusinessEvents:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys
        self._append_once = redis.register_script(_APPEND_ONCE)
        self._outcomes = ToneOutcomes(redis, keys)

    async def append(self, type: str, debtor_id: str, data: dict[str, Any], *,
                     event_id: str | None = None, creditor: str | None = None,
                     occurred_at: datetime | None = None) -> str:
        """Append one event; its id comes back. With `event_id`, appending the same id again
        (a retried job) appends nothing and returns the id. Without `creditor`, the debtor's
        own creditor is looked up, so the event still reaches the right creditor."""
        _check_no_floats(data)
        if creditor is None:
            creditor = await self._creditor_of(debtor_id)
        event = {
            "id": event_id or uuid.uuid4().hex,
            "type": type,
            "debtor_id": debtor_id,
            "creditor": creditor,
            "occurred_at": utc_iso(occurred_at or datetime.now(UTC)),
            "data": data,
        }
        payload = json.dumps(event, default=_json_default, ensure_ascii=False,
                             separators=(",", ":"))
        if event_id is None:
            await self.redis.xadd(self.keys.business_events, {"data": payload})
        else:
            appended, _entry = await self._append_once(
                keys=[self.keys.business_events, self.keys.business_event_id(event_id)],
                args=[payload])
            if not appended:
                log.info("business_event.duplicate", event_id=event_id, type=type)
                return event["id"]
        # Promises, plans chosen, payments, link clicks: outcomes of the campaign message
        # before them (counted once per message however often an event repeats).
        outcome = outcome_of_business_event(type, data)
        if outcome:
            await self._outcomes.record(debtor_id, outcome,
                                        at=(occurred_at or datetime.now(UTC)).timestamp())
        return event["id"]

    async def _creditor_of(self, debtor_id: str) -> str | None:
        raw = await self.redis.get(self.keys.debtor(debtor_id))
        if raw is None:
            return None
        try:
            return json.loads(raw).get("creditor")
        except (ValueError, AttributeError):
            return None

    async def read(self, after: str | None = None, count: int = 100
                   ) -> list[tuple[str, dict[str, Any]]]:
        """Up to `count` (entry id, event) pairs after stream entry `after` (exclusive),
        oldest first. Page on with the last entry id."""
        start = f"({after}" if after else "-"
        rows = await self.redis.xrange(self.keys.business_events, start, "+", count=count)
        return [_decode_entry(entry_id, fields) for entry_id, fields in rows]

    async def iterate(self, *, since: datetime | None = None, until: datetime | None = None,
                      types: Collection[str] | None = None, batch: int | None = None):
        """Every event, oldest first, fetched `batch` at a time (the stream is never held in
        memory whole). `since` (inclusive) and `until` (exclusive) select by occurred_at:
        an event may be recorded well after it happened (a payment file imported a week
        late), so the stream's own entry times cannot be used to skip ahead."""
        batch = batch or EXPORT_BATCH
        low = utc_iso(since) if since else None
        high = utc_iso(until) if until else None
        wanted = set(types) if types else None
        after = None
        while True:
            page = await self.read(after, batch)
            for entry_id, event in page:
                at = event.get("occurred_at", "")
                if (low and at < low) or (high and at >= high):
                    continue
                if wanted and event.get("type") not in wanted:
                    continue
                yield entry_id, event
            if len(page) < batch:
                return
            after = page[-1][0]

    async def export_jsonl(self, out: IO[str], *, since: datetime | None = None,
                           until: datetime | None = None,
                           types: Collection[str] | None = None) -> int:
        """Write the selected events to `out`, one JSON object a line; how many came back."""
        written = 0
        async for _entry_id, event in self.iterate(since=since, until=until, types=types):
            out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
            written += 1
        return written

    async def export_csv(self, out: IO[str], *, since: datetime | None = None,
                         until: datetime | None = None,
                         types: Collection[str] | None = None) -> int:
        """Write the selected events to `out` as CSV (columns CSV_COLUMNS, `data` as JSON);
        how many rows (not counting the header) came back."""
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        written = 0
        async for _entry_id, event in self.iterate(since=since, until=until, types=types):
            writer.writerow(_csv_row(event))
            written += 1
        return written


def _csv_row(event: dict[str, Any]) -> Iterator[str]:
    for column in CSV_COLUMNS[:-1]:
        value = event.get(column)
        yield "" if value is None else _neutralise(str(value))
    yield json.dumps(event.get("data", {}), ensure_ascii=False, separators=(",", ":"))


def _neutralise(text: str) -> str:
    """A cell starting with = + - @ is run as a formula by spreadsheet programs; a leading
    quote keeps it text (ids and names come from imported files)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
