"""The audit log in the console, for admins (``audit.view``): newest first, filtered by actor,
action (a prefix of dotted actions: "login" finds "login.failed") and debtor id, paged by
entry id, and exported as CSV with the same filters.

    GET /console/audit[?actor=&action=&debtor=&before=<entry id>&limit=]
    GET /console/audit.csv[?actor=&action=&debtor=]

Every view and every export is itself an audit entry (``audit.view``, ``audit.export``), with
the filters used; filtering by a debtor puts the view in that debtor's own trail. The log holds
ids, action names and reason codes, never message bodies or contact details (service/audit.py),
so nothing here has to be hidden; an erased debtor's entries show their pseudonym only.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from service.audit import ENTRY_ID, AuditPage
from service.console import auth

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
EXPORT_MAX_ROWS = 100_000
EXPORT_BATCH = 1000
CSV_COLUMNS = ("id", "at", "actor", "action", "debtor_id", "subject", "detail")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/audit", audit_page)
    app.router.add_get("/console/audit.csv", audit_csv)


class _BadFilter(ValueError):
    pass


def _filters(request: web.Request) -> dict[str, str | None]:
    """actor, action, debtor: stripped, bounded, None when empty."""
    out: dict[str, str | None] = {}
    for name in ("actor", "action", "debtor"):
        value = request.query.get(name, "").strip()
        if len(value) > 100:
            raise _BadFilter(f"The {name} filter is too long.")
        out[name] = value or None
    return out


def _paging(request: web.Request) -> tuple[str | None, int]:
    before = request.query.get("before", "").strip() or None
    if before is not None and not ENTRY_ID.match(before):
        raise _BadFilter("That page cursor is not an audit entry id.")
    raw = request.query.get("limit", "").strip()
    try:
        limit = int(raw) if raw else PAGE_SIZE
    except ValueError:
        raise _BadFilter("The page size must be a whole number.") from None
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise _BadFilter(f"The page size must be between 1 and {MAX_PAGE_SIZE}.")
    return before, limit


def _iso(at: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(at)))
    except (TypeError, ValueError):
        return ""


def _detail_text(detail: Any) -> str:
    if not detail:
        return ""
    if isinstance(detail, dict):
        return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                         for k, v in detail.items())
    return json.dumps(detail, ensure_ascii=False)


@auth.requires("audit.view")
async def audit_page(request: web.Request) -> web.Response:
    try:
        filters = _filters(request)
        before, limit = _paging(request)
    except _BadFilter as bad:
        return auth.error(request, 400, str(bad))
    # recorded first: the page shows this view too (it is the newest entry when unfiltered)
    await _audit(request, "audit.view", filters, **({"before": before} if before else {}))
    page: AuditPage = await request.app[auth.AUDIT].page(
        before=before, limit=limit, actor=filters["actor"], action=filters["action"],
        debtor_id=filters["debtor"])
    kept = {k: v for k, v in filters.items() if v}
    if limit != PAGE_SIZE:
        kept["limit"] = str(limit)
    rows = [{"id": e["id"], "at": _iso(e.get("at")), "actor": e.get("actor", ""),
             "action": e.get("action", ""), "debtor_id": e.get("debtor_id") or "",
             "subject": e.get("subject", ""), "detail": _detail_text(e.get("detail"))}
            for e in page.entries]
    return auth.render(request, "console/audit.html", {
        "rows": rows, "filters": {k: v or "" for k, v in filters.items()},
        "filtered": any(filters.values()),
        "newer_page": bool(before),
        "first_url": "/console/audit" + (f"?{urlencode(kept)}" if kept else ""),
        "older_url": (f"/console/audit?{urlencode({**kept, 'before': page.older})}"
                      if page.older else ""),
        "csv_url": "/console/audit.csv" + (
            f"?{urlencode({k: v for k, v in filters.items() if v})}" if any(filters.values()) else ""),
        "scanned": page.scanned, "searched_on": bool(page.older) and len(rows) < limit,
        "limit": limit,
    })


async def _audit(request: web.Request, action: str, filters: dict[str, str | None],
                 **detail: Any) -> None:
    """Audit a view or an export with its filters. Filtering by a debtor puts the entry in that
    debtor's trail, but only for a debtor the log still links to: recording would otherwise
    restore the pseudonym -> id link an erasure deleted (or make one for a mistyped id)."""
    log = request.app[auth.AUDIT]
    shown = {k: v for k, v in filters.items() if v and k != "debtor"}
    debtor = filters["debtor"]
    linked = None
    if debtor:
        pseudonym = log.pseudonym(debtor)
        if await log.redis.hexists(log.lookup_key, pseudonym):
            linked = debtor
        else:
            shown["subject"] = pseudonym
    await auth.audit(request, action, debtor_id=linked, **({"filters": shown} if shown else {}),
                     **detail)


def _cell(value: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (OWASP: CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@auth.requires("audit.view")
async def audit_csv(request: web.Request) -> web.StreamResponse:
    try:
        filters = _filters(request)
    except _BadFilter as bad:
        return auth.error(request, 400, str(bad))
    await _audit(request, "audit.export", filters)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    # streamed: the console's usual headers are set here, before the first byte goes
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="audit-{stamp}.csv"',
        "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": auth.CSP, "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin"})
    await response.prepare(request)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    log = request.app[auth.AUDIT]
    before, written = None, 0
    while written < EXPORT_MAX_ROWS:
        page = await log.page(before=before, limit=min(EXPORT_BATCH, EXPORT_MAX_ROWS - written),
                              actor=filters["actor"], action=filters["action"],
                              debtor_id=filters["debtor"])
        for entry in page.entries:
            writer.writerow([_cell(entry["id"]), _cell(_iso(entry.get("at"))),
                             _cell(entry.get("actor")), _cell(entry.get("action")),
                             _cell(entry.get("debtor_id")), _cell(entry.get("subject")),
                             _cell(json.dumps(entry.get("detail") or {}, ensure_ascii=False,
                                              sort_keys=True))])
        written += len(page.entries)
        await response.write(buffer.getvalue().encode("utf-8"))
        buffer.seek(0)
        buffer.truncate()
        if page.older is None:
            break
        before = page.older
    await response.write_eof()
    return response
