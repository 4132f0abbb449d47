"""The template editor (#7): managers edit the message templates, someone else approves, and
the text is live at once (service/template_versions.py); supervisors may look.

    GET  /console/templates[?key=&tone=&channel=&language=&pending=1]   browse
    GET  /console/templates/{name}[?from=N]                  the editor (name: en/balance.j2)
    GET  /console/api/templates                              the list, as JSON
    GET  /console/api/templates/{name}                       live text, versions, facts
    POST /console/api/templates/{name}/preview               render a draft (sample debtor)
    POST /console/api/templates/{name}/versions              propose a draft  (templates.edit)
    GET  /console/api/templates/{name}/versions/{number}     one version, with its text
    GET  /console/api/templates/{name}/diff?a=N&b=M          unified diff
    POST /console/api/templates/{name}/versions/{number}/approve    (templates.approve, four eyes)
    POST /console/api/templates/{name}/versions/{number}/reject     (templates.approve; the
                                                                    author may withdraw)
    POST /console/api/templates/{name}/versions/{number}/rollback   (templates.rollback)

A preview renders the draft in a child process (service/template_sandbox.run_isolated_async):
never in the gateway itself, and at most ``PARALLEL_RENDERS`` at a time. Its variables are the
catalogue's samples with a made-up debtor of the chosen segment (service/template_preview.py),
never a real debtor's data.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import date, datetime, timezone
from typing import Any

from aiohttp import web

from bot.core.segments import SegmentBook, load_segment_book
from service import appkeys as K
from service.channel_config import ChannelConfig
from service.console import auth
from service.template_preview import (
    TemplateName,
    dependents,
    issue_dict,
    preview,
    sample_debtor,
    served_by,
)
from service.template_sandbox import MAX_SOURCE, SandboxLimitError, run_isolated_async
from service.template_versions import (
    DraftRefused,
    FourEyesError,
    TemplateVersionError,
    TemplateVersions,
    UnknownTemplate,
    UnknownVersion,
    Version,
    VersionStateError,
    whatsapp_templates,
)
from service.templates import CHANNELS, JURISDICTIONS, LANGUAGES, TONES

VERSIONS = web.AppKey("template_versions", TemplateVersions)
SEGMENTS = web.AppKey("editor_segments", SegmentBook)
WHATSAPP = web.AppKey("editor_channels", ChannelConfig)
RENDERS = web.AppKey("editor_renders", asyncio.Semaphore)

PARALLEL_RENDERS = 2          # isolated previews running at once in this gateway
PREVIEW_SECONDS = 3.0
NAME = r"{name:[a-z][a-z]/[A-Za-z0-9_][A-Za-z0-9_.]*\.j2}"
DEFAULT_JURISDICTION = {"en": "UK", "nl": "EU/NL", "de": "DE"}


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/templates", list_page)
    app.router.add_get(f"/console/templates/{NAME}", editor_page)
    app.router.add_get("/console/api/templates", list_api)
    app.router.add_get(f"/console/api/templates/{NAME}", detail_api)
    app.router.add_post(f"/console/api/templates/{NAME}/preview", preview_api)
    app.router.add_post(f"/console/api/templates/{NAME}/versions", propose_api)
    app.router.add_get(f"/console/api/templates/{NAME}/versions/{{number:\\d+}}", version_api)
    app.router.add_get(f"/console/api/templates/{NAME}/diff", diff_api)
    app.router.add_post(f"/console/api/templates/{NAME}/versions/{{number:\\d+}}/approve", approve_api)
    app.router.add_post(f"/console/api/templates/{NAME}/versions/{{number:\\d+}}/reject", reject_api)
    app.router.add_post(f"/console/api/templates/{NAME}/versions/{{number:\\d+}}/rollback",
                        rollback_api)
    app.cleanup_ctx.append(_services)


async def _services(app: web.Application):
    settings = app[K.SETTINGS]
    app[VERSIONS] = TemplateVersions(app[K.REDIS], app[K.KEYS], settings.templates_dir,
                                     audit=app[auth.AUDIT], company_name=settings.company_name)
    app[SEGMENTS] = load_segment_book(settings.policies_dir / "segments.yml")
    app[WHATSAPP] = ChannelConfig.load(settings.policies_dir)
    app[RENDERS] = asyncio.Semaphore(PARALLEL_RENDERS)
    yield


# --- errors at the edge ----------------------------------------------------------------------
def _refusal(request: web.Request, error: Exception) -> web.Response:
    if isinstance(error, DraftRefused):
        return web.json_response({"error": str(error).split(": ", 1)[0],
                                  "issues": [issue_dict(i) for i in error.issues]}, status=422)
    if isinstance(error, SandboxLimitError):
        return auth.error(request, 422, f"the check did not finish: {error.message}")
    status = (404 if isinstance(error, (UnknownTemplate, UnknownVersion))
              else 403 if isinstance(error, FourEyesError)
              else 409 if isinstance(error, VersionStateError) else 400)
    return auth.error(request, status, str(error))


def _refusing(handler):
    """Domain errors become HTTP answers here, and only here."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (TemplateVersionError, UnknownTemplate, SandboxLimitError) as error:
            return _refusal(request, error)
    return wrapped


def _name(request: web.Request) -> TemplateName:
    return request.app[VERSIONS].parse(request.match_info["name"])


def _number(request: web.Request) -> int:
    return int(request.match_info["number"])


def _text_field(body: dict[str, Any], name: str, *, required: bool = False, limit: int = 500) -> str:
    value = body.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise TemplateVersionError(f"{name!r} must be text")
    if required and not value:
        raise TemplateVersionError(f"{name!r} is required")
    if len(value) > limit:
        raise TemplateVersionError(f"{name!r} is longer than {limit} characters")
    return value


def _version_row(version: Version, *, me: str, live: int, file_live: bool,
                 may: dict[str, bool]) -> dict[str, Any]:
    """A version without its text, with what this person may do with it."""
    row = version.to_dict()
    row.pop("text")
    pending = version.status == "pending"
    row["actions"] = {
        # four eyes: never on one's own edit; a stale draft must be proposed again
        "approve": pending and not version.stale and may["approve"] and version.author != me,
        "reject": pending and may["approve"],   # a reviewer rejects, the author withdraws
        "rollback": may["rollback"] and version.was_live and version.number != live
        and not (version.number == 0 and file_live),
    }
    row["own"] = version.author == me
    row["created_text"] = _when(version.created) if version.created else ""
    row["decision"] = _decision(version)
    return row


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _decision(version: Version) -> str:
    if version.kind != "edit" or not version.decided_by:
        return ""
    if version.status == "rejected":
        verb = "withdrawn" if version.decided_by == version.author else f"rejected by {version.decided_by}"
    else:
        verb = f"approved by {version.decided_by}"
    return f"{verb}, {_when(version.decided_at)}" if version.decided_at else verb


def _may(request: web.Request) -> dict[str, bool]:
    return {"edit": auth.allowed(request, "templates.edit"),
            "approve": auth.allowed(request, "templates.approve"),
            "rollback": auth.allowed(request, "templates.rollback")}


async def _history_rows(request: web.Request, name: str) -> tuple[list[dict[str, Any]], int]:
    versions = request.app[VERSIONS]
    history = await versions.history(name)
    live = await versions.live_number(name)
    me, may = auth.user(request).username, _may(request)
    # the file is live at version 0, or after a rollback to it
    file_live = live == 0 or any(v.number == live and v.rollback_of == 0 for v in history)
    rows = [_version_row(v, me=me, live=live, file_live=file_live, may=may) for v in history]
    return rows, live


# --- browse ----------------------------------------------------------------------------------
async def _catalogue_rows(request: web.Request) -> list[dict[str, Any]]:
    versions = request.app[VERSIONS]
    pending = await versions.pending_names()
    live = await versions.live_numbers()
    rows = []
    for name in versions.names():
        parsed = TemplateName.parse(name)
        rows.append({"name": name, "language": parsed.language, "key": parsed.key,
                     "tone": parsed.tone, "channel": parsed.channel, "partial": parsed.partial,
                     "pending": name in pending, "live_version": live.get(name, 0)})
    return rows


def _filtered(rows: list[dict[str, Any]], query: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    wanted = {field: query.get(field, "").strip() for field in ("key", "tone", "channel", "language")}
    wanted["pending"] = "1" if query.get("pending") else ""
    kept = []
    for row in rows:
        if wanted["language"] and row["language"] != wanted["language"]:
            continue
        if wanted["key"] == "_partials" and not row["partial"]:
            continue
        if wanted["key"] not in ("", "_partials") and row["key"] != wanted["key"]:
            continue
        if wanted["tone"] and (row["tone"] or "none") != wanted["tone"]:
            continue
        if wanted["channel"] and (row["channel"] or "any") != wanted["channel"]:
            continue
        if wanted["pending"] and not row["pending"]:
            continue
        kept.append(row)
    return kept, wanted


@auth.requires("templates.view")
async def list_page(request: web.Request) -> web.Response:
    rows = await _catalogue_rows(request)
    shown, wanted = _filtered(rows, request.query)
    return auth.render(request, "console/editor_list.html", {
        "rows": shown, "total": len(rows), "wanted": wanted,
        "keys": sorted({r["key"] for r in rows if r["key"]}), "tones": TONES,
        "channels": CHANNELS, "languages": list(LANGUAGES),
        "pending_count": sum(1 for r in rows if r["pending"])})


@auth.requires("templates.view")
async def list_api(request: web.Request) -> web.Response:
    shown, _ = _filtered(await _catalogue_rows(request), request.query)
    return web.json_response({"templates": shown})


# --- one template ----------------------------------------------------------------------------
async def _detail(request: web.Request, parsed: TemplateName) -> dict[str, Any]:
    versions = request.app[VERSIONS]
    overlay = await versions.overlay()
    rows, live = await _history_rows(request, parsed.name)
    users = await asyncio.to_thread(dependents, versions.root, overlay, parsed.name)
    names = versions.names()
    return {
        "name": parsed.name, "language": parsed.language, "key": parsed.key, "tone": parsed.tone,
        "channel": parsed.channel, "partial": parsed.partial,
        "live_version": live, "live_text": await versions.live_text(parsed.name),
        "versions": rows, "serves": [list(p) for p in served_by(parsed.name, names)],
        "used_by": users, "preview_via": [u for u in users if not TemplateName.parse(u).partial],
        "whatsapp": whatsapp_templates(request.app[WHATSAPP], parsed),
        "may": _may(request), "you": auth.user(request).username,
    }


@auth.requires("templates.view")
@_refusing
async def editor_page(request: web.Request) -> web.Response:
    try:
        parsed = _name(request)
    except UnknownTemplate as error:
        return auth.error(request, 404, str(error))
    detail = await _detail(request, parsed)
    text, source = detail["live_text"], f"version {detail['live_version']} (live)"
    start = request.query.get("from", "")
    if start.isdigit():
        try:
            version = await request.app[VERSIONS].version(parsed.name, int(start))
            text, source = version.text, f"version {version.number}"
        except UnknownVersion:
            pass
    channels = sorted({c for _, c in detail["serves"]}) or (
        [parsed.channel] if parsed.channel else list(CHANNELS))
    return auth.render(request, "console/editor.html", {
        **detail, "text": text, "source": source, "channels": channels,
        "segments": request.app[SEGMENTS].segments, "jurisdictions": JURISDICTIONS,
        "default_jurisdiction": DEFAULT_JURISDICTION[parsed.language], "max_source": MAX_SOURCE})


@auth.requires("templates.view")
@_refusing
async def detail_api(request: web.Request) -> web.Response:
    return web.json_response(await _detail(request, _name(request)))


@auth.requires("templates.view")
@_refusing
async def version_api(request: web.Request) -> web.Response:
    version = await request.app[VERSIONS].version(_name(request).name, _number(request))
    return web.json_response(version.to_dict())


@auth.requires("templates.view")
@_refusing
async def diff_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    versions = request.app[VERSIONS]
    try:
        a = int(request.query.get("a", "0"))
        b = int(request.query.get("b", str(await versions.live_number(parsed.name))))
    except ValueError:
        raise TemplateVersionError("a and b are version numbers") from None
    return web.json_response({"a": a, "b": b, "diff": await versions.diff(parsed.name, a, b)})


# --- preview ---------------------------------------------------------------------------------
@auth.requires("templates.view")
@_refusing
async def preview_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    body = await auth.json_body(request)
    text = _text_field(body, "text", required=True, limit=MAX_SOURCE)
    channel = body.get("channel") or (parsed.channel or "sms")
    if channel not in CHANNELS:
        raise TemplateVersionError(f"channel: one of {', '.join(CHANNELS)}")
    jurisdiction = body.get("jurisdiction") or DEFAULT_JURISDICTION[parsed.language]
    if jurisdiction not in JURISDICTIONS:
        raise TemplateVersionError(f"jurisdiction: one of {', '.join(JURISDICTIONS)}")
    book = request.app[SEGMENTS]
    segment_name = body.get("segment") or book.names[0]
    try:
        segment = book.get(str(segment_name))
    except KeyError as error:
        raise TemplateVersionError(str(error.args[0])) from None
    via = body.get("via") or None
    if via is not None:
        via_name = TemplateName.parse(str(via))
        if via_name.language != parsed.language:
            raise TemplateVersionError("via: a template of the same language")
    versions = request.app[VERSIONS]
    debtor = sample_debtor(segment, parsed.language, versions.catalogue, date.today())
    overlay = await versions.overlay()
    async with request.app[RENDERS]:
        result = await run_isolated_async(
            functools.partial(preview, channel=channel, debtor=debtor, jurisdiction=jurisdiction,
                              via=via, company=versions.company_name),
            versions.root, versions.catalogue, overlay, parsed.name, text, timeout=PREVIEW_SECONDS)
    result["debtor"] = debtor.to_dict()
    result["channel"] = channel
    return web.json_response(result)


# --- changes ---------------------------------------------------------------------------------
@auth.requires("templates.edit")
@_refusing
async def propose_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    body = await auth.json_body(request)
    text = _text_field(body, "text", required=True, limit=MAX_SOURCE)
    note = _text_field(body, "note")
    version = await request.app[VERSIONS].propose(parsed.name, text, auth.user(request).username, note)
    return web.json_response(version.to_dict(), status=201)


@auth.requires("templates.approve")
@_refusing
async def approve_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    version = await request.app[VERSIONS].approve(parsed.name, _number(request),
                                                  auth.user(request).username)
    return web.json_response(version.to_dict())


@auth.requires("templates.approve")
@_refusing
async def reject_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    body = await auth.json_body(request) if request.can_read_body else {}
    version = await request.app[VERSIONS].reject(parsed.name, _number(request),
                                                 auth.user(request).username,
                                                 _text_field(body, "reason"))
    return web.json_response(version.to_dict())


@auth.requires("templates.rollback")
@_refusing
async def rollback_api(request: web.Request) -> web.Response:
    parsed = _name(request)
    body = await auth.json_body(request) if request.can_read_body else {}
    version = await request.app[VERSIONS].rollback(parsed.name, _number(request),
                                                   auth.user(request).username,
                                                   _text_field(body, "note"))
    return web.json_response(version.to_dict(), status=201)
