"""Provider webhooks on the gateway: Twilio (SMS and WhatsApp messages, status callbacks),
SendGrid Inbound Parse, and our own SMTP listener for inbound mail.

Every handler verifies the sender first (403 otherwise), parses strictly (400 with a reason),
stores and queues the message (service/inbound.py) and answers at once: the engine never runs
inside a webhook, so Twilio's 15-second limit is never near.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from channels import twilio_inbound
from channels.base import InboundMessage
from channels.email_inbound import EmailParseError, ParsedEmail, parse_mime
from channels.sendgrid_inbound import (
    SendGridRequestError,
    parse_sendgrid_request,
    verify_sendgrid_signature,
)
from service import appkeys as K
from service.channel_config import ChannelConfig
from service.delivery import FAILED_STATES, FAILURE_JOB, TWILIO_STATUS, DeliveryStore
from service.inbound import enqueue_processing
from service.logs import get_logger
from service.routing import InboundRouter, Route

log = get_logger("webhooks")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
ROUTER = web.AppKey("router", InboundRouter)
DELIVERIES = web.AppKey("deliveries", DeliveryStore)
CHANNEL_CONFIG = web.AppKey("channel_config", ChannelConfig)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/twilio/sms", twilio_message)
    app.router.add_post("/twilio/whatsapp", twilio_message)
    app.router.add_post("/twilio/status", twilio_status)
    app.router.add_post("/email/sendgrid", sendgrid_inbound)
    app.cleanup_ctx.append(_stores)
    app.cleanup_ctx.append(_smtp_listener)


async def _stores(app: web.Application):
    settings = app[K.SETTINGS]
    app[ROUTER] = InboundRouter(app[K.REDIS], app[K.KEYS], settings.pseudonym_key)
    app[DELIVERIES] = DeliveryStore(app[K.REDIS], app[K.KEYS])
    app[CHANNEL_CONFIG] = ChannelConfig.load(settings.policies_dir)
    yield


# --- ingest: shared by every channel ----------------------------------------------------
async def ingest(app: web.Application, message: InboundMessage, route: Route) -> bool:
    """Store and queue one inbound message for its conversation; False for a duplicate."""
    accepted = await app[K.INBOUND].accept(message, route.conversation_id)
    if accepted:
        if route.debtor_id is None:
            await app[K.REDIS].sadd(app[K.KEYS].unknown_senders, route.conversation_id)
        await enqueue_processing(app[K.REDIS], route.conversation_id, message.message_id,
                                 app[K.SETTINGS].queue_name)
    return accepted


# --- Twilio ------------------------------------------------------------------------------
async def _signed_form(request: web.Request) -> dict[str, str]:
    """The form parameters of a request Twilio signed; 403 for anything else."""
    settings = request.app[K.SETTINGS]
    # Twilio posts UTF-8. Another charset label (unknown, or a codec like rot13 or undefined)
    # or bytes that are not UTF-8 made aiohttp's form decoding raise: a 500 for anyone.
    if request.content_type != "application/x-www-form-urlencoded" \
            or (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise web.HTTPForbidden(text="not a Twilio request")
    try:
        form = await request.post()
    except UnicodeDecodeError:
        raise web.HTTPForbidden(text="not a Twilio request") from None
    if any(not isinstance(value, str) for value in form.values()):
        raise web.HTTPForbidden(text="not a Twilio request")
    # raw_path: the path and query exactly as sent (path_qs would re-encode %3A and the like)
    url = settings.webhook_base_url + request.raw_path
    settings_header = request.headers.get("X-Twilio-Webhooks-Signature-Settings")
    secret = (settings.twilio_webhook_shared_key if settings_header
              else settings.twilio_auth_token)
    if not twilio_inbound.signature_valid(secret, url, form,
                                          request.headers.get("X-Twilio-Signature"),
                                          settings_header):
        log.warning("twilio_signature_refused", path=request.path)
        raise web.HTTPForbidden(text="invalid Twilio signature")
    # Past the signature, a repeated parameter is Twilio's; the first value is the one we read.
    params = {key: form.getone(key) for key in form}
    try:
        twilio_inbound.check_account(params, settings.twilio_account_sid)
    except twilio_inbound.TwilioRequestError as error:
        raise web.HTTPForbidden(text=str(error)) from None
    return params


async def twilio_message(request: web.Request) -> web.Response:
    params = await _signed_form(request)
    try:
        message = twilio_inbound.parse_message(params)
    except twilio_inbound.TwilioRequestError as error:
        log.warning("twilio_message_malformed", error=str(error))
        raise web.HTTPBadRequest(text=str(error)) from None
    route = await request.app[ROUTER].for_phone(message.address)
    accepted = await ingest(request.app, message, route)
    if not accepted:
        log.info("twilio_duplicate", message_id=message.message_id)
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


async def twilio_status(request: web.Request) -> web.Response:
    """Delivery state moves forward only; a failure is acted on by the worker."""
    params = await _signed_form(request)
    try:
        update = twilio_inbound.parse_status(params)
    except twilio_inbound.TwilioRequestError as error:
        raise web.HTTPBadRequest(text=str(error)) from None
    message_id = request.query.get("m", "")
    store = request.app[DELIVERIES]
    record = await store.get(message_id) if message_id else {}
    state = TWILIO_STATUS.get(update.status)
    if not record or state is None:
        # Erased since, or a status we do not track (receiving): nothing to do, and Twilio
        # must not retry it.
        return web.Response(status=204)
    moved = await store.advance(record, state, error_code=update.error_code,
                                provider_id=update.message_sid)
    if moved and state in FAILED_STATES:
        await request.app[K.REDIS].enqueue_job(FAILURE_JOB, message_id,
                                               _job_id=f"fail:{message_id}",
                                               _queue_name=request.app[K.SETTINGS].queue_name)
    return web.Response(status=204)


# --- email -------------------------------------------------------------------------------
async def sendgrid_inbound(request: web.Request) -> web.Response:
    settings = request.app[K.SETTINGS]
    body = await _read_bounded(request, request.app[CHANNEL_CONFIG].email.max_inbound_bytes)
    if not verify_sendgrid_signature(settings.sendgrid_inbound_public_key, body,
                                     request.headers):
        log.warning("sendgrid_signature_refused")
        raise web.HTTPForbidden(text="invalid SendGrid signature")
    try:
        parsed = parse_sendgrid_request(request.headers.get("Content-Type", ""), body)
    except (SendGridRequestError, EmailParseError) as error:
        log.warning("sendgrid_malformed", error=str(error)[:200])
        raise web.HTTPBadRequest(text=str(error)) from None
    await accept_email(request.app, parsed)
    return web.Response(status=200, text="ok")


async def _read_bounded(request: web.Request, limit: int) -> bytes:
    """The body, up to `limit` bytes (mail with attachments is larger than the gateway's
    general request limit, so this route reads its own way); 413 beyond."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


async def accept_email(app: web.Application, parsed: ParsedEmail) -> str:
    """Route one parsed email: a bounce marks the message it bounced, an auto-reply is noted
    and goes no further, anything else is a debtor's (or a stranger's) message."""
    router = app[ROUTER]
    if parsed.auto_reply:
        if parsed.auto_reply == "bounce":
            for header_id in parsed.bounced_message_ids:
                message_id = await router.message_for_thread(header_id)
                if message_id:
                    await _bounced(app, message_id)
        log.info("email_auto_reply", reason=parsed.auto_reply)
        return parsed.auto_reply
    route = await router.for_email(parsed.from_address, parsed.to_addresses,
                                   (*parsed.in_reply_to, *reversed(parsed.references)))
    message = parsed.to_inbound(time.time())
    if route.thread_mismatch:
        log.info("email_thread_mismatch", conversation=route.conversation_id)
    accepted = await ingest(app, message, route)
    return "accepted" if accepted else "duplicate"


async def _bounced(app: web.Application, message_id: str) -> None:
    store = app[DELIVERIES]
    record = await store.get(message_id)
    if record and await store.advance(record, "undelivered", error_code="bounce"):
        await app[K.REDIS].enqueue_job(FAILURE_JOB, message_id, _job_id=f"fail:{message_id}",
                                       _queue_name=app[K.SETTINGS].queue_name)


async def _smtp_listener(app: web.Application):
    """Our SMTP listener, on the gateway's own event loop, when NUDGE_SMTP_LISTEN_PORT is set."""
    settings = app[K.SETTINGS]
    if not settings.smtp_listen_port:
        yield
        return
    from aiosmtpd.smtp import SMTP

    from channels.smtp_inbound import InboundSmtpHandler

    config = app[CHANNEL_CONFIG]

    async def on_message(raw: bytes, envelope_from: str, envelope_to: list[str]) -> None:
        # The envelope recipient is where the mail really came to (a Bcc, a forward).
        await accept_email(app, parse_mime(raw, provider="smtp", envelope_to=envelope_to))

    # aiosmtpd logs each SMTP command at INFO, addresses included: never in our logs.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = InboundSmtpHandler(on_message, accepted_domains={config.email.reply_domain})
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=config.email.max_inbound_bytes,
                     enable_SMTPUTF8=True),
        host=settings.smtp_listen_host, port=settings.smtp_listen_port)
    log.info("smtp_listening", port=settings.smtp_listen_port)
    yield
    server.close()
    await server.wait_closed()
