"""`nudge report`: how the tones do, per segment, from what Redis already holds. Read-only.

Sources (service/keys.py):

* ``Keys.outcome_counts``: ``<segment>|<step>|<tone>|<channel>|<group>|<outcome>`` -> count,
  each outcome once per message, plus ``resolved`` and ``success`` (a message is resolved once:
  a success inside its success window, or a failure when the window closed or the next step
  replaced it). Volumes, conversion (success / resolved), reply rate and the lift over the
  holdout come from here.
* ``Keys.tone_stats``: the bandit's Beta posterior counts ``<segment>|<tone>|s`` / ``|f``; the
  current allocation is recomputed from them with :func:`thompson_allocation`, the book's
  exploration floor and a seeded ``random.Random`` (the same data gives the same report).
* ``Keys.tone_log``: read once, in chunks (XRANGE ... COUNT), never whole. Allocation
  snapshots (the bandit's allocation over time, the last one logged) and the assignment /
  resolution pairs, joined by assignment id, for the inverse-propensity estimate
  (:class:`IpwEstimate`); only the assignments still open are held in memory.
* ``Keys.tone_pins``, ``Keys.campaigns``: pins, and the campaigns for context.

Numbers: rates are fractions (0.25 is 25 %); every interval is 95 %. Conversion counts only
resolved messages (messages whose success window is still open are in `sent`, not in
`resolved`). Rows sum over steps and groups (bandit, holdout, pinned, guardrail); each row's
``groups`` tells them apart.

    report = await gather_report(redis, keys, book, now=time.time())
    Path("report.json").write_text(report.to_json())
    write_charts(report, Path("reports/today"))
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bot.core.debtors import CHANNELS
from bot.core.segments import OUTCOMES, TONES, SegmentBook
from bot.core.tone_choice import (
    ArmCounts,
    candidates,
    suspended_tones,
    thompson_allocation,
    wilson_interval,
)
from service.keys import Keys

CONFIDENCE = 0.95
Z = 1.9599640                       # the normal quantile of a two-sided 95 % interval
COUNTERS = (*OUTCOMES, "resolved", "success")
GROUPS = ("bandit", "holdout", "pinned", "guardrail")
#: The groups whose messages the bandit (or a manager) chose: compared with the holdout.
TREATED_GROUPS = ("bandit", "pinned")
ALL = "all"                         # the channel of a segment × tone total row
#: The recomputed allocation: Monte Carlo draws and the seed (with the segment's name).
ALLOCATION_DRAWS = 10_000
ALLOCATION_SEED = "nudge-report"
#: Allocation snapshots kept per segment for the chart (thinned evenly beyond this).
HISTORY_POINTS = 500
LOG_CHUNK = 1000
#: The funnel's stages: (label, the outcomes counted, summed).
FUNNEL = (("sent", ("sent",)), ("delivered", ("delivered",)), ("replied", ("replied",)),
          ("promise / plan", ("promise_made", "pay_later_chosen")), ("paid", ("paid",)))
NO_DATA = "no campaign messages yet — start one with `nudge campaign start`"


# --- statistics ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """count of of, with its Wilson score interval (none without data)."""

    count: int
    of: int

    @property
    def rate(self) -> float | None:
        return self.count / self.of if self.of else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.count, self.of, CONFIDENCE) if self.of else None

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval or (None, None)
        return {"count": self.count, "of": self.of, "rate": _r(self.rate), "low": _r(low),
                "high": _r(high)}


def newcombe_difference(s1: int, n1: int, s2: int, n2: int,
                        confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """p1 - p2 and its confidence interval by Newcombe's hybrid score method: the difference's
    limits are built from each proportion's Wilson score interval (l_i, u_i),

        low  = d - sqrt((p1 - l1)^2 + (u2 - p2)^2)
        high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)

    R. G. Newcombe, "Interval estimation for the difference between independent proportions:
    comparison of eleven methods", Statistics in Medicine 17 (1998) 873-890, method 10. Good
    coverage at small samples and near 0 or 1, unlike the plain Wald interval.
    Needs n1 > 0 and n2 > 0."""
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both groups need at least one resolved message")
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1, confidence)
    l2, u2 = wilson_interval(s2, n2, confidence)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


@dataclass(frozen=True)
class Lift:
    """Conversion of the messages the bandit or a pin chose minus that of the holdout's."""

    treated: Rate
    holdout: Rate
    holdout_tone: str

    @property
    def difference(self) -> tuple[float, float, float]:
        return newcombe_difference(self.treated.count, self.treated.of,
                                   self.holdout.count, self.holdout.of)

    def to_dict(self) -> dict[str, Any]:
        d, low, high = self.difference
        return {"treated_groups": list(TREATED_GROUPS), "treated": self.treated.to_dict(),
                "holdout_tone": self.holdout_tone, "holdout": self.holdout.to_dict(),
                "difference": _r(d), "low": _r(low), "high": _r(high),
                "method": "newcombe_hybrid_score"}


@dataclass
class IpwEstimate:
    """One tone's conversion in a segment as if every bandit-group message had had that tone,
    from the logged assignments and their probabilities p (inverse-propensity weighting, w=1/p):

    * ``estimate``: self-normalised (Hajek), sum(w r) / sum(w) over the tone's messages;
    * ``ht_estimate``: Horvitz-Thompson, sum(w r) / N, N = the segment's bandit messages used.

    Unbiased (HT) or consistent (Hajek) where the naive success/resolved is not: the bandit
    gives a tone more messages when and where it looked good, so the tone's naive rate mixes
    periods unevenly. Only the bandit group counts (holdout, pins and guardrails are not a
    random draw with the logged p), and only messages whose success window has closed (both
    successes and failures are resolved when it closes); a tone a guardrail suspended for a while had p = 0 then, and the
    estimate covers the rest of the time. ``low``/``high``: a normal interval from the
    delta-method variance sum(w^2 (r - estimate)^2) / sum(w)^2, clipped to [0, 1].
    ``effective_n`` = sum(w)^2 / sum(w^2): how many unweighted messages the estimate is worth.
    """

    tone: str
    assignments: int = 0
    successes: int = 0
    sum_w: float = 0.0
    sum_wr: float = 0.0
    sum_w2: float = 0.0
    sum_w2r: float = 0.0
    segment_assignments: int = 0     # N: the segment's bandit messages used, every tone

    def add(self, p: float, success: bool) -> None:
        w = 1.0 / p
        self.assignments += 1
        self.sum_w += w
        self.sum_w2 += w * w
        if success:
            self.successes += 1
            self.sum_wr += w
            self.sum_w2r += w * w

    @property
    def estimate(self) -> float | None:
        return self.sum_wr / self.sum_w if self.sum_w else None

    @property
    def ht_estimate(self) -> float | None:
        return self.sum_wr / self.segment_assignments if self.segment_assignments else None

    @property
    def interval(self) -> tuple[float, float] | None:
        mu = self.estimate
        if mu is None:
            return None
        spread = self.sum_w2r * (1 - 2 * mu) + mu * mu * self.sum_w2
        half = Z * math.sqrt(max(spread, 0.0)) / self.sum_w
        return max(0.0, mu - half), min(1.0, mu + half)

    @property
    def effective_n(self) -> float:
        return self.sum_w ** 2 / self.sum_w2 if self.sum_w2 else 0.0

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval or (None, None)
        return {"estimate": _r(self.estimate), "low": _r(low), "high": _r(high),
                "ht_estimate": _r(self.ht_estimate), "assignments": self.assignments,
                "successes": self.successes, "naive": _r(self.successes / self.assignments
                                                         if self.assignments else None),
                "effective_n": _r(self.effective_n, 1)}


# --- the report ------------------------------------------------------------------------------
@dataclass
class ToneRow:
    """One segment × tone × channel (channel ``all``: the tone's total over channels)."""

    segment: str
    tone: str
    channel: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    groups: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, group: str, name: str, n: int) -> None:
        if name in self.counts:
            self.counts[name] += n
        else:   # an outcome this version does not know: kept, never dropped silently
            self.counts[name] = n
        if name in ("sent", "resolved", "success"):
            counts = self.groups.setdefault(group, {"sent": 0, "resolved": 0, "success": 0})
            counts[name] += n

    @property
    def conversion(self) -> Rate:
        return Rate(self.counts["success"], self.counts["resolved"])

    @property
    def reply_rate(self) -> Rate:
        return Rate(self.counts["replied"], self.counts["sent"])

    @property
    def delivered_rate(self) -> Rate:
        return Rate(self.counts["delivered"], self.counts["sent"])

    def funnel(self) -> list[tuple[str, int]]:
        return [(label, sum(self.counts.get(n, 0) for n in names)) for label, names in FUNNEL]

    def to_dict(self) -> dict[str, Any]:
        return {"tone": self.tone, "channel": self.channel, "counts": dict(self.counts),
                "conversion": self.conversion.to_dict(), "reply_rate": self.reply_rate.to_dict(),
                "delivered_rate": self.delivered_rate.to_dict(),
                "groups": {g: dict(self.groups[g]) for g in _ordered(self.groups, GROUPS)}}


@dataclass(frozen=True)
class Snapshot:
    """An allocation the tone chooser logged (``kind=allocation`` in ``Keys.tone_log``)."""

    at: float
    allocation: dict[str, float]
    suspended: dict[str, str]
    pinned: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "at_iso": _iso(self.at), "allocation": dict(self.allocation),
                "suspended": dict(self.suspended), "pinned": self.pinned}


@dataclass
class Allocation:
    """The bandit's allocation of a segment: now (recomputed) and as logged over time."""

    tones: list[str]                              # allowed by segments.yml
    arms: dict[str, ArmCounts]
    current: dict[str, float]                     # recomputed; 0 for a suspended tone
    suspended: dict[str, str]
    pinned: str | None
    seed: str
    history: list[Snapshot] = field(default_factory=list)   # thinned to HISTORY_POINTS
    snapshots: int = 0                            # how many were logged
    last: Snapshot | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"tones": list(self.tones), "current": {t: _r(v) for t, v in self.current.items()},
                "arms": {t: {"successes": a.successes, "failures": a.failures}
                         for t, a in self.arms.items()},
                "suspended": dict(self.suspended), "pinned": self.pinned,
                "recomputed_with": {"seed": self.seed, "draws": ALLOCATION_DRAWS},
                "last_snapshot": self.last.to_dict() if self.last else None,
                "snapshots_logged": self.snapshots,
                "history": [s.to_dict() for s in self.history]}


@dataclass
class SegmentReport:
    name: str
    in_book: bool
    tones: list[str]
    rows: list[ToneRow]                  # per tone × channel
    totals: list[ToneRow]                # per tone, every channel
    allocation: Allocation | None
    lift: Lift | None
    ipw: dict[str, IpwEstimate]
    ipw_assignments: int                 # bandit assignments joined with their resolution

    def total(self, tone: str) -> ToneRow | None:
        return next((row for row in self.totals if row.tone == tone), None)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(COUNTERS, 0)
        for row in self.totals:
            for name, n in row.counts.items():
                out[name] = out.get(name, 0) + n
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"segment": self.name, "in_segments_file": self.in_book, "tones": list(self.tones),
                "counts": self.counts(),
                "rows": [r.to_dict() for r in self.rows],
                "totals": [r.to_dict() for r in self.totals],
                "allocation": self.allocation.to_dict() if self.allocation else None,
                "lift": self.lift.to_dict() if self.lift else None,
                "ipw": {"assignments_used": self.ipw_assignments,
                        "tones": {t: e.to_dict() for t, e in self.ipw.items()}}}


@dataclass
class LogScan:
    """What reading ``Keys.tone_log`` found (the IPW join's bookkeeping)."""

    entries: int = 0
    assignments: int = 0
    resolutions: int = 0
    joined: int = 0                 # resolutions whose assignment was found
    used: int = 0                   # of those, bandit-group ones with a usable p
    bad_propensity: int = 0         # bandit assignments logged without a p in (0, 1]
    unmatured: int = 0              # bandit, resolved, but the success window still open
    matured_unresolved: int = 0     # bandit, window closed, no resolution logged yet: failures
    orphan_resolutions: int = 0     # no assignment before it (trimmed by MAXLEN, or erased)
    open_assignments: int = 0       # assigned, not yet resolved, at the end
    max_open: int = 0               # the most held in memory at once
    snapshots: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    generated_at: float
    source: str
    success_outcomes: list[str]
    success_days: int
    exploration_floor: float
    holdout_share: float
    holdout_tone: str
    segments: list[SegmentReport]
    campaigns: list[dict[str, Any]]
    log: LogScan
    segment_filter: str | None = None

    @property
    def empty(self) -> bool:
        """No campaign message was ever recorded (for the segment asked about)."""
        return not any(s.counts()["sent"] for s in self.segments) and not self.log.assignments

    def segment(self, name: str) -> SegmentReport:
        for seg in self.segments:
            if seg.name == name:
                return seg
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at, "generated_at_iso": _iso(self.generated_at),
            "confidence": CONFIDENCE, "segments_file": self.source,
            "segment_filter": self.segment_filter,
            "success": {"outcomes": list(self.success_outcomes), "within_days": self.success_days},
            "bandit": {"exploration_floor": self.exploration_floor,
                       "holdout_share": self.holdout_share, "holdout_tone": self.holdout_tone},
            "empty": self.empty,
            "segments": [s.to_dict() for s in self.segments],
            "campaigns": list(self.campaigns),
            "tone_log": self.log.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --- reading Redis ---------------------------------------------------------------------------
async def gather_report(redis: Redis, keys: Keys, book: SegmentBook, *, now: float,
                        segment: str | None = None, chunk: int = LOG_CHUNK) -> Report:
    """Everything the report shows, read from Redis (nothing is written). `segment`: only
    that one. `chunk`: tone-log entries per XRANGE call."""
    from service.tone_outcomes import ToneOutcomes

    counts = await ToneOutcomes(redis, keys, book).counts()
    stats: dict[str, int] = {}
    async for name, value in redis.hscan_iter(keys.tone_stats, count=1000):
        stats[_s(name)] = int(value)
    pins = {_s(k): _s(v) for k, v in (await redis.hgetall(keys.tone_pins)).items()}
    scan, history, ipw = await _scan_log(redis, keys, segment, chunk,
                                         matured_before=now - book.success_days * 86400)

    names = [n for n in book.names if segment in (None, n)]
    seen = {key[0] for key in counts} | set(history) | set(ipw)
    names += sorted(n for n in seen - set(names) if segment in (None, n))
    segments = []
    for name in names:
        seg_counts = {k: n for k, n in counts.items() if k[0] == name}
        if not seg_counts and name not in history and name not in ipw:
            continue        # nothing sent in this segment yet
        segments.append(_segment_report(name, book, seg_counts, stats, pins.get(name),
                                        history.get(name), ipw.get(name, {})))
    return Report(
        generated_at=now, source=book.source, success_outcomes=sorted(book.success_outcomes),
        success_days=book.success_days, exploration_floor=book.bandit.exploration_floor,
        holdout_share=book.bandit.holdout_share, holdout_tone=book.bandit.holdout_tone,
        segments=segments, campaigns=await _campaigns(redis, keys, book, segment), log=scan,
        segment_filter=segment)


def _segment_report(name: str, book: SegmentBook, counts: Mapping[tuple[str, ...], int],
                    stats: Mapping[str, int], pinned: str | None, history: _History | None,
                    ipw: dict[str, IpwEstimate]) -> SegmentReport:
    in_book = name in book.names
    allowed = list(book.get(name).workflow.tones) if in_book else []
    seen_tones = {key[2] for key in counts} | set(ipw)
    tones = allowed + _ordered(seen_tones - set(allowed), TONES)
    rows: dict[tuple[str, str], ToneRow] = {}
    totals = {tone: ToneRow(name, tone, ALL) for tone in tones}
    holdout, treated = [0, 0], [0, 0]
    for (_seg, _step, tone, channel, group, outcome), n in counts.items():
        rows.setdefault((tone, channel), ToneRow(name, tone, channel)).add(group, outcome, n)
        totals[tone].add(group, outcome, n)
        if outcome in ("success", "resolved"):
            index = 0 if outcome == "success" else 1
            if group == "holdout":
                holdout[index] += n
            elif group in TREATED_GROUPS:
                treated[index] += n
    channel_order = {c: i for i, c in enumerate(CHANNELS)}
    ordered_rows = sorted(rows.values(), key=lambda r: (tones.index(r.tone),
                                                        channel_order.get(r.channel, 99), r.channel))
    allocation = None
    if in_book:
        allocation = _allocation(name, book, allowed, list(totals.values()), stats, pinned)
    if allocation is not None and history is not None:
        allocation.history, allocation.snapshots, allocation.last = (
            history.points(), history.count, history.last)
    lift = None
    if treated[1] and holdout[1]:
        lift = Lift(Rate(treated[0], treated[1]), Rate(holdout[0], holdout[1]),
                    book.bandit.holdout_tone)
    used = next(iter(ipw.values())).segment_assignments if ipw else 0
    return SegmentReport(name=name, in_book=in_book, tones=tones, rows=ordered_rows,
                         totals=[totals[t] for t in tones], allocation=allocation, lift=lift,
                         ipw={t: ipw[t] for t in _ordered(ipw, tones)}, ipw_assignments=used)


def _allocation(name: str, book: SegmentBook, allowed: list[str], totals: list[ToneRow],
                stats: Mapping[str, int], pinned: str | None) -> Allocation:
    """What the tone chooser would compute now (service/tone_chooser.py), reproducibly."""
    def per_tone(outcome: str) -> dict[str, int]:
        return {row.tone: row.counts.get(outcome, 0) for row in totals if row.counts.get(outcome)}

    suspended = suspended_tones(per_tone("sent"), per_tone("opted_out"), per_tone("complained"),
                                book.bandit.guardrails)
    arms = {t: ArmCounts(stats.get(f"{name}|{t}|s", 0), stats.get(f"{name}|{t}|f", 0))
            for t in allowed}
    usable = candidates(allowed, suspended)
    seed = f"{ALLOCATION_SEED}:{name}"
    current = dict.fromkeys(allowed, 0.0)
    if usable:
        current.update(thompson_allocation({t: arms[t] for t in usable},
                                           floor=book.bandit.exploration_floor,
                                           rng=random.Random(seed), draws=ALLOCATION_DRAWS))
    return Allocation(tones=allowed, arms=arms, current=current, suspended=suspended,
                      pinned=pinned or None, seed=seed)


class _History:
    """A segment's allocation snapshots, thinned evenly to at most 2 x `limit` in memory."""

    def __init__(self, limit: int = HISTORY_POINTS):
        self.limit, self.stride, self.count = limit, 1, 0
        self.kept: list[Snapshot] = []
        self.last: Snapshot | None = None

    def add(self, snapshot: Snapshot) -> None:
        self.count += 1
        self.last = snapshot
        if self.count % self.stride == 0:
            self.kept.append(snapshot)
            if len(self.kept) >= 2 * self.limit:
                self.kept = self.kept[1::2]      # keeps every (2 x stride)-th: even spacing
                self.stride *= 2

    def points(self) -> list[Snapshot]:
        """The kept snapshots and always the last one."""
        if self.last is not None and (not self.kept or self.kept[-1] is not self.last):
            return [*self.kept, self.last]
        return list(self.kept)


async def _scan_log(redis: Redis, keys: Keys, segment: str | None, chunk: int, *,
                    matured_before: float
                    ) -> tuple[LogScan, dict[str, _History], dict[str, dict[str, IpwEstimate]]]:
    """One pass over the tone log, `chunk` entries at a time. Holds the open assignments
    (aid -> segment, tone, group, p, when) until their resolution, nothing else per message.

    Only assignments sent before `matured_before` (their success window has closed) count for
    the estimate: a message is resolved (success or failure) only when its window closes."""
    scan = LogScan()
    history: dict[str, _History] = {}
    ipw: dict[str, dict[str, IpwEstimate]] = {}
    used: dict[str, int] = {}
    open_: dict[str, tuple[str, str, str, float | None, float | None]] = {}
    start = "-"
    while True:
        entries = await redis.xrange(keys.tone_log, min=start, max="+", count=chunk)
        if not entries:
            break
        for _entry_id, raw in entries:
            scan.entries += 1
            fields = {_s(k): _s(v) for k, v in raw.items()}
            kind = fields.get("kind")
            if kind == "assign":
                seg = fields.get("segment", "")
                if segment not in (None, seg):
                    continue
                scan.assignments += 1
                ipw.setdefault(seg, {})             # the segment shows, estimate or not
                open_[fields.get("aid", "")] = (seg, fields.get("tone", ""),
                                                fields.get("group", ""), _float(fields.get("p")),
                                                _float(fields.get("at")))
                scan.max_open = max(scan.max_open, len(open_))
            elif kind == "resolve":
                found = open_.pop(fields.get("aid", ""), None)
                if found is None:
                    if segment is None:     # with a filter: another segment's, most likely
                        scan.resolutions += 1
                        scan.orphan_resolutions += 1
                    continue
                scan.resolutions += 1
                scan.joined += 1
                seg, tone, group, p, sent_at = found
                if group != "bandit":
                    continue
                if p is None or not 0 < p <= 1:
                    scan.bad_propensity += 1
                    continue
                if sent_at is None or sent_at > matured_before:
                    scan.unmatured += 1
                    continue
                scan.used += 1
                used[seg] = used.get(seg, 0) + 1
                estimates = ipw.setdefault(seg, {})
                estimates.setdefault(tone, IpwEstimate(tone)).add(p, fields.get("success") == "1")
            elif kind == "allocation":
                seg = fields.get("segment", "")
                if segment not in (None, seg):
                    continue
                snapshot = _snapshot(fields)
                if snapshot is not None:
                    scan.snapshots += 1
                    history.setdefault(seg, _History()).add(snapshot)
        if len(entries) < chunk:
            break
        start = "(" + _s(entries[-1][0])
    scan.open_assignments = len(open_)
    for seg, tone, group, p, sent_at in open_.values():
        # the window closed but the worker has not resolved it yet (resolve_expired runs on its
        # own schedule): counted as a failure, the likelier outcome
        if group == "bandit" and p is not None and 0 < p <= 1 and sent_at is not None \
                and sent_at <= matured_before:
            scan.matured_unresolved += 1
            scan.used += 1
            used[seg] = used.get(seg, 0) + 1
            ipw.setdefault(seg, {}).setdefault(tone, IpwEstimate(tone)).add(p, False)
    for seg, estimates in ipw.items():
        for estimate in estimates.values():
            estimate.segment_assignments = used[seg]
    return scan, history, ipw


def _snapshot(fields: Mapping[str, str]) -> Snapshot | None:
    try:
        allocation = {str(k): float(v) for k, v in json.loads(fields.get("allocation") or "{}").items()}
        suspended = json.loads(fields.get("suspended") or "{}")
        at = float(fields["at"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if not isinstance(suspended, dict):     # older entries: a list of tones
        suspended = {str(t): "" for t in suspended} if isinstance(suspended, list) else {}
    return Snapshot(at, allocation, {str(k): str(v) for k, v in suspended.items()},
                    fields.get("pinned") or None)


async def _campaigns(redis: Redis, keys: Keys, book: SegmentBook, segment: str | None,
                     limit: int = 200) -> list[dict[str, Any]]:
    """The latest campaigns, newest first (as Campaigns.list, skipping one whose record is
    gone instead of failing the whole report)."""
    from service.campaigns import CampaignError, Campaigns

    campaigns = Campaigns(redis, keys, book)
    out = []
    for raw in await redis.zrevrange(keys.campaigns, 0, limit - 1):
        try:
            status = await campaigns.status(_s(raw))
        except (CampaignError, KeyError, ValueError):
            continue
        if segment not in (None, status.segment):
            continue
        out.append({"id": status.id, "segment": status.segment, "step": status.step,
                    "state": status.state, "run": status.run, "created_at": status.created_at,
                    "created_at_iso": _iso(status.created_at), "queued": status.queued,
                    "handled": status.handled, "sent": status.counts.get("sent", 0),
                    "counts": dict(sorted(status.counts.items()))})
    return out


# --- charts ----------------------------------------------------------------------------------
_TONE_COLOURS = {"loss_aversion": "#d62728", "social_proof": "#1f77b4", "soft": "#2ca02c"}
_SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH_INCHES, DPI = 10.0, 100        # 1000 px wide PNGs


def write_charts(report: Report, out_dir: Path) -> list[Path]:
    """conversion.{png,svg}, allocation.{png,svg}, funnel.{png,svg} in `out_dir`; their paths.
    Matplotlib without pyplot (no display, no global state): each figure is drawn by the Agg
    (PNG) or SVG backend."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "nudge-report"      # stable ids in the SVG
    out_dir.mkdir(parents=True, exist_ok=True)
    tones = _ordered({t for s in report.segments for t in s.tones}, TONES)
    colours = {t: _TONE_COLOURS.get(t) or _SPARE_COLOURS[i % len(_SPARE_COLOURS)]
               for i, t in enumerate(tones)}
    paths: list[Path] = []
    for name, draw in (("conversion", _conversion_chart), ("allocation", _allocation_chart),
                       ("funnel", _funnel_chart)):
        figure = draw(report, colours)
        for suffix in ("png", "svg"):
            path = out_dir / f"{name}.{suffix}"
            figure.savefig(path, format=suffix, dpi=DPI, metadata={"Date": None} if suffix == "svg"
                           else None)
            paths.append(path)
    return paths


def _figure(height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(WIDTH_INCHES, height), layout="constrained")


def _conversion_chart(report: Report, colours: Mapping[str, str]):
    from matplotlib.ticker import PercentFormatter

    figure = _figure(5.5)
    ax = figure.add_subplot()
    segments = report.segments
    tones = list(colours)
    width = 0.8 / max(len(tones), 1)
    top = 0.0
    for i, tone in enumerate(tones):
        xs, ys, below, above, sizes = [], [], [], [], []
        for j, seg in enumerate(segments):
            row = seg.total(tone)
            conversion = row.conversion if row else None
            if conversion is None or conversion.rate is None or conversion.interval is None:
                continue
            low, high = conversion.interval
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(conversion.rate)
            below.append(conversion.rate - low)
            above.append(high - conversion.rate)
            sizes.append(conversion.of)
            top = max(top, high)
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.92, yerr=[below, above], capsize=4, color=colours[tone],
               label=tone, error_kw={"elinewidth": 1.2, "ecolor": "#333333"})
        for x, y, n, up in zip(xs, ys, sizes, above, strict=True):   # n above the whisker
            ax.text(x, y + up + 0.008, f"n={n}", ha="center", va="bottom", fontsize=8,
                    color="#333333")
    for j, seg in enumerate(segments):
        if seg.lift is not None:
            ax.hlines(seg.lift.holdout.rate, j - 0.45, j + 0.45, colors="black",
                      linestyles="dashed", linewidth=1.2,
                      label=(f"holdout ({report.holdout_tone}, conversion)"
                             if j == _first_lift(segments) else None))
    ax.set_xticks(range(len(segments)), [s.name for s in segments])
    ax.set_xlim(-0.6, max(len(segments) - 0.4, 0.6))
    ax.set_ylim(0, min(1.0, top + 0.12) if top else 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("segment")
    ax.set_ylabel(f"conversion (success within {report.success_days} days)")
    ax.set_title("Conversion per segment and tone, with 95 % Wilson intervals\n"
                 f"success = {', '.join(report.success_outcomes)}; n = resolved messages",
                 fontsize=12)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title="tone", loc="upper right")
    if not segments:
        _no_data(ax)
    return figure


def _first_lift(segments: list[SegmentReport]) -> int:
    return next((j for j, s in enumerate(segments) if s.lift is not None), -1)


def _allocation_chart(report: Report, colours: Mapping[str, str]):
    import matplotlib.dates as mdates
    from matplotlib.ticker import PercentFormatter

    segments = report.segments or []
    rows = max(len(segments), 1)
    figure = _figure(1.2 + 2.4 * rows)
    axes = figure.subplots(rows, 1, squeeze=False, sharex=True)[:, 0]
    # every segment's last allocation holds until the last snapshot of any (not until now: a
    # quiet month would squash the history into a sliver)
    ends = [s.allocation.history[-1].at for s in segments if s.allocation and s.allocation.history]
    end = max(ends) if ends else report.generated_at
    figure.suptitle("Bandit allocation over time (logged snapshots; share of bandit-group "
                    "messages per tone)", fontsize=12)
    for ax, seg in zip(axes, segments, strict=False):   # no segment: one empty axes
        alloc = seg.allocation
        history = alloc.history if alloc else []
        ax.set_title(seg.name, loc="left", fontsize=11)
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("share")
        if not history:
            _no_data(ax, "no allocation snapshot logged yet")
            continue
        tones = [t for t in colours if any(t in s.allocation for s in history)]
        times = [datetime.fromtimestamp(s.at, UTC) for s in history]
        times.append(datetime.fromtimestamp(max(end, history[-1].at + 3600), UTC))
        history = [*history, history[-1]]
        shares = [[s.allocation.get(t, 0.0) for s in history] for t in tones]
        ax.stackplot(times, *shares, labels=tones, colors=[colours[t] for t in tones],
                     step="post", alpha=0.85)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.legend(title="tone", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (UTC)")
    if not segments:
        _no_data(axes[0])
    return figure


def _funnel_chart(report: Report, colours: Mapping[str, str]):
    from matplotlib.ticker import PercentFormatter

    segments = report.segments or []
    rows = max(len(segments), 1)
    figure = _figure(1.2 + 2.8 * rows)
    axes = figure.subplots(rows, 1, squeeze=False)[:, 0]
    figure.suptitle("Funnel per segment and tone: share of messages sent reaching each stage\n"
                    "(each stage counted on its own: a promise or payment needs no reply first)",
                    fontsize=12)
    stages = [label for label, _ in FUNNEL]
    for ax, seg in zip(axes, segments, strict=False):   # no segment: one empty axes
        tones = [row for row in seg.totals if row.counts["sent"]]
        width = 0.8 / max(len(tones), 1)
        for i, row in enumerate(tones):
            sent = row.counts["sent"]
            values = [n / sent for _label, n in row.funnel()]
            xs = [k - 0.4 + width * (i + 0.5) for k in range(len(stages))]
            bars = ax.bar(xs, values, width * 0.92, color=colours.get(row.tone),
                          label=f"{row.tone} ({sent} sent)")
            ax.bar_label(bars, labels=[str(n) for _label, n in row.funnel()], padding=1,
                         fontsize=7)
        ax.set_title(seg.name, loc="left", fontsize=11)
        ax.set_xticks(range(len(stages)), stages)
        ax.set_ylim(0, 1.12)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("% of sent")
        ax.set_xlabel("stage (numbers on the bars: messages)")
        ax.grid(axis="y", alpha=0.3)
        if tones:
            ax.legend(title="tone", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        else:
            _no_data(ax)
    if not segments:
        _no_data(axes[0])
    return figure


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#666666",
            fontsize=11)


# --- small helpers ---------------------------------------------------------------------------
def _ordered(names: Iterable[str], order: Iterable[str]) -> list[str]:
    """`names` in the order of `order`, unknown ones after it, alphabetically."""
    names = set(names)
    order = list(order)
    return [n for n in order if n in names] + sorted(names - set(order))


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
