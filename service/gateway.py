"""The gateway: every HTTP edge of Nudge in one aiohttp app.

Webhooks are acknowledged at once and the work is queued (service/inbound.py). Here: health,
metrics, the simulator (page and API); provider webhooks in service/webhooks.py; the web console
(service/console/).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiosmtplib
from aiohttp import ClientSession, web
from arq import create_pool
from arq.connections import RedisSettings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError

from twilio.request_validator import RequestValidator

from channels import simulator
from channels.email_inbound import parse_mime
from service import appkeys as K
from service import campaign_api, console, pay_page, payments, unsubscribe, webhooks
from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.inbound import InboundStore
from service.keys import Keys
from service.logs import configure_logging, get_logger
from service.settings import Settings
from service.web_json import json_body

log = get_logger("gateway")
STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    app[K.SETTINGS] = settings
    app[K.KEYS] = Keys(settings.key_prefix)

    async def redis_ctx(app: web.Application):
        pool = await create_pool(RedisSettings.from_dsn(settings.redis_url),
                                 default_queue_name=settings.queue_name)
        app[K.REDIS] = pool
        app[K.DEBTORS] = RedisDebtorStore(pool, app[K.KEYS])
        app[K.CONVERSATIONS] = ConversationStore(pool, app[K.KEYS])
        app[K.INBOUND] = InboundStore(pool, app[K.KEYS])
        yield
        await pool.aclose()

    app.cleanup_ctx.append(redis_ctx)
    webhooks.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    unsubscribe.add_routes(app)
    pay_page.add_routes(app)
    payments.add_routes(app)
    campaign_api.add_routes(app)
    console.add_routes(app)
    if settings.simulator_enabled:
        add_simulator_routes(app)
    return app


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[K.REDIS].ping(), timeout=2)
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy"
        return web.json_response({"status": "unhealthy", "redis": repr(error)[:200]}, status=503)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


# --- simulator -----------------------------------------------------------------------
def add_simulator_routes(app: web.Application) -> None:
    app.router.add_get("/", to_simulator)
    app.router.add_get("/simulator", simulator_page)
    app.router.add_get("/simulator/api/debtors", sim_debtors)
    app.router.add_post("/simulator/api/debtors/{debtor_id}/remind", sim_remind)
    app.router.add_post("/simulator/api/debtors/{debtor_id}/messages", sim_message)
    app.router.add_get("/simulator/api/debtors/{debtor_id}/transcript", sim_transcript)
    app.router.add_get("/simulator/api/debtors/{debtor_id}/stream", sim_stream)
    app.router.add_static("/static", STATIC)


async def to_simulator(request: web.Request) -> web.Response:
    raise web.HTTPFound("/simulator")


async def simulator_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "simulator.html")


async def sim_debtors(request: web.Request) -> web.Response:
    store = request.app[K.DEBTORS]
    rows = []
    for debtor_id in await store.all_ids():
        debtor = await store.get(debtor_id)
        if debtor is None:
            continue
        rows.append({"id": debtor.id, "name": f"{debtor.first_name} {debtor.last_name}",
                     "language": debtor.language, "country": debtor.country,
                     "preferred_channel": debtor.preferred_channel,
                     "channels": [c for c, a in (("sms", debtor.phone), ("whatsapp", debtor.phone),
                                                 ("email", debtor.email)) if a],
                     "date_of_birth": debtor.date_of_birth.isoformat(), "postcode": debtor.postcode,
                     "reference": debtor.reference})
    return web.json_response({"debtors": rows})


async def _debtor_or_404(request: web.Request):
    debtor = await request.app[K.DEBTORS].get(request.match_info["debtor_id"])
    if debtor is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "no such debtor"}),
                               content_type="application/json")
    return debtor


async def sim_remind(request: web.Request) -> web.Response:
    debtor = await _debtor_or_404(request)
    body = await json_body(request)
    channel = body.get("channel") or debtor.preferred_channel
    address = debtor.email if channel == "email" else debtor.phone
    if channel not in ("sms", "whatsapp", "email") or not address:
        return web.json_response({"error": f"{debtor.id} cannot be reached by {channel}"}, status=400)
    message_id = f"reminder-{uuid.uuid4().hex}"
    await request.app[K.REDIS].enqueue_job("send_reminder", debtor.id, channel, message_id,
                                           _job_id=message_id,
                                           _queue_name=request.app[K.SETTINGS].queue_name)
    return web.json_response({"queued": message_id}, status=202)


async def sim_message(request: web.Request) -> web.Response:
    """The debtor's message, sent the way the provider would send it: a signed Twilio
    webhook to /twilio/<channel>, or an email to our SMTP listener."""
    debtor = await _debtor_or_404(request)
    body = await json_body(request)
    channel = body.get("channel")
    address = debtor.email if channel == "email" else debtor.phone
    try:
        message = simulator.parse(body, address or "")
    except simulator.SimulatorRequestError as error:
        return web.json_response({"error": str(error)}, status=400)
    if not address:
        return web.json_response({"error": f"{debtor.id} has no {channel} address"}, status=400)
    if channel == "email":
        message_id, duplicate = await _simulate_email(request, message, debtor)
    else:
        message_id, duplicate = await _simulate_twilio(request, message, debtor)
    return web.json_response({"message_id": message_id, "duplicate": duplicate},
                             status=200 if duplicate else 202)


def _own_url(request: web.Request) -> str:
    """Where this very server listens (not the Host header, which a proxy may have set)."""
    host, port = request.transport.get_extra_info("sockname")[:2]
    return f"http://{host}:{port}"


async def _simulate_twilio(request: web.Request, message, debtor) -> tuple[str, bool]:
    settings = request.app[K.SETTINGS]
    sender = request.app[webhooks.CHANNEL_CONFIG].sender(message.channel)
    params = simulator.twilio_params(message=message, account_sid=settings.twilio_account_sid,
                                     to=sender.from_number or "+3197010520000",
                                     profile_name=debtor.first_name)
    sid = params["MessageSid"]
    duplicate = bool(await request.app[K.REDIS].exists(request.app[K.KEYS].inbound(sid)))
    path = f"/twilio/{message.channel}"
    signature = RequestValidator(settings.twilio_auth_token).compute_signature(
        settings.webhook_base_url + path, params)
    async with ClientSession() as session, session.post(
            _own_url(request) + path, data=params,
            headers={"X-Twilio-Signature": signature}) as response:
        if response.status != 200:
            raise web.HTTPBadGateway(text=json.dumps({"error": await response.text()}),
                                     content_type="application/json")
    return sid, duplicate


async def _simulate_email(request: web.Request, message, debtor) -> tuple[str, bool]:
    settings = request.app[K.SETTINGS]
    config = request.app[webhooks.CHANNEL_CONFIG]
    to = await request.app[webhooks.ROUTER].reply_address(debtor.id, config.email.reply_domain)
    raw = simulator.email_mime(message=message, to=to, subject="Re: your account",
                               in_reply_to=None)
    parsed = parse_mime(raw, provider="simulator")
    duplicate = bool(await request.app[K.REDIS].exists(request.app[K.KEYS].inbound(parsed.message_id)))
    if settings.smtp_listen_port:
        await aiosmtplib.send(raw, sender=message.address, recipients=[to],
                              hostname=settings.smtp_listen_host, port=settings.smtp_listen_port,
                              start_tls=False, use_tls=False)
    else:
        await webhooks.accept_email(request.app, parsed)
    return parsed.message_id, duplicate


async def sim_transcript(request: web.Request) -> web.Response:
    debtor = await _debtor_or_404(request)
    after = request.query.get("after", "-")
    entries = await request.app[K.CONVERSATIONS].transcript(debtor.id, after=after)
    state = await request.app[K.CONVERSATIONS].get(debtor.id)
    return web.json_response({"entries": [{"id": i, **e} for i, e in entries],
                              "owner": state.owner, "reason": state.reason})


async def sim_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each new transcript entry of the conversation, as it happens."""
    debtor = await _debtor_or_404(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    pubsub = request.app[K.REDIS].pubsub()
    await pubsub.subscribe(request.app[K.KEYS].events_channel(debtor.id))
    try:
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=15)
            if message is None:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(b"data: " + message["data"] + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError, RedisConnectionError):
        pass  # the browser left, or the gateway is shutting down
    finally:
        await pubsub.aclose()
    return response


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    web.run_app(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                print=None, shutdown_timeout=5, access_log=None)


if __name__ == "__main__":
    main()
