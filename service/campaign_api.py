"""The campaign API on the gateway (the same operations as `nudge campaign ...`).

    GET  /api/segments                       the segments and their workflows
    GET  /api/campaigns                      the latest campaigns
    POST /api/campaigns                      {"segment", "step", "by", "follow"?} -> 201 {"id"}
    GET  /api/campaigns/{id}                 state and counts
    POST /api/campaigns/{id}/{pause|resume|cancel}   {"by"}

Internal: every call needs ``Authorization: Bearer <NUDGE_API_TOKEN>`` (generated into
.run/secrets.env by `make run`); without a configured token the API answers 503 to everyone.
Answers are JSON; errors are ``{"error": "..."}`` with 400 (bad request), 401 (no or wrong
token), 404 (no such campaign), 409 (not in a state that allows it). Every change is audited
under the name given in ``by``.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from bot.core.segments import load_segment_book
from service import appkeys as K
from service.audit import AuditLog
from service.campaigns import CampaignError, Campaigns

CAMPAIGNS = web.AppKey("campaigns", Campaigns)


def add_routes(app: web.Application) -> None:
    async def campaigns_ctx(app: web.Application):
        settings = app[K.SETTINGS]
        app[CAMPAIGNS] = Campaigns(app[K.REDIS], app[K.KEYS],
                                   load_segment_book(settings.policies_dir / "segments.yml"),
                                   queue_name=settings.queue_name)
        yield

    app.cleanup_ctx.append(campaigns_ctx)
    app.router.add_get("/api/segments", segments)
    app.router.add_get("/api/campaigns", list_campaigns)
    app.router.add_post("/api/campaigns", start_campaign)
    app.router.add_get("/api/campaigns/{id}", campaign_status)
    app.router.add_post("/api/campaigns/{id}/{action:pause|resume|cancel}", control_campaign)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorised(request: web.Request) -> web.Response | None:
    token = request.app[K.SETTINGS].api_token
    if not token:
        return _error(503, "the API is off: NUDGE_API_TOKEN is not set")
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
        return _error(401, "a valid bearer token is required")
    return None


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        return _error(400, "the body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    by = body.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > 64:
        return _error(400, "'by' (who does this, for the audit log) is required")
    return body


async def segments(request: web.Request) -> web.Response:
    if (refused := _authorised(request)) is not None:
        return refused
    book = request.app[CAMPAIGNS].book
    return web.json_response({"segments": [
        {"name": s.name, "description": s.description,
         "steps": [{"step": st.number, "day": st.day, "template": st.template}
                   for st in s.workflow.steps],
         "channels": list(s.workflow.channels), "tones": list(s.workflow.tones)}
        for s in book.segments]})


async def list_campaigns(request: web.Request) -> web.Response:
    if (refused := _authorised(request)) is not None:
        return refused
    rows = await request.app[CAMPAIGNS].list(int(request.query.get("limit", "50") or 50))
    return web.json_response({"campaigns": [r.to_dict() for r in rows]})


async def start_campaign(request: web.Request) -> web.Response:
    if (refused := _authorised(request)) is not None:
        return refused
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    segment, step = body.get("segment"), body.get("step", 1)
    if not isinstance(segment, str) or isinstance(step, bool) or not isinstance(step, int):
        return _error(400, "'segment' (text) and 'step' (a whole number) are required")
    try:
        campaign_id = await request.app[CAMPAIGNS].start(segment, step, by=body["by"],
                                                         follow=bool(body.get("follow", True)))
    except CampaignError as error:
        return _error(400, str(error))
    await _audit(request, body["by"], "campaign.start", campaign=campaign_id, segment=segment,
                 step=step)
    return web.json_response({"id": campaign_id}, status=201)


async def campaign_status(request: web.Request) -> web.Response:
    if (refused := _authorised(request)) is not None:
        return refused
    try:
        status = await request.app[CAMPAIGNS].status(request.match_info["id"])
    except CampaignError as error:
        return _error(404, str(error))
    return web.json_response(status.to_dict())


async def control_campaign(request: web.Request) -> web.Response:
    if (refused := _authorised(request)) is not None:
        return refused
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    campaign_id, action = request.match_info["id"], request.match_info["action"]
    campaigns = request.app[CAMPAIGNS]
    try:
        await campaigns.status(campaign_id)
    except CampaignError as error:
        return _error(404, str(error))
    try:
        state = await campaigns.set_state(campaign_id, action, by=body["by"])
    except CampaignError as error:
        return _error(409, str(error))
    await _audit(request, body["by"], f"campaign.{action}", campaign=campaign_id)
    return web.json_response({"id": campaign_id, "state": state})


async def _audit(request: web.Request, actor: str, action: str, **detail: Any) -> None:
    settings = request.app[K.SETTINGS]
    await AuditLog(request.app[K.REDIS], request.app[K.KEYS], settings.pseudonym_key).record(
        actor, action, via="api", **detail)
