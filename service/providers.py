"""The providers behind the channels, as service/delivery.py sees them: `send` one delivery
record, and `find_sent` (did an earlier, ambiguous attempt create it?).

* Twilio (SMS and WhatsApp) through the twilio SDK's async client. The status-callback URL
  carries our message id, so every callback names the message it is about (and tells us the
  message exists even when the create call timed out).
* Email through SMTP (aiosmtplib) or SendGrid's v3 API. Each message has a Message-ID derived
  from our message id, so a resend after an ambiguous failure carries the same Message-ID and
  mail clients show it once; SMTP offers no way to ask whether a message went through.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import aiohttp
from twilio.base.exceptions import TwilioException

from channels.email_outbound import (
    EmailSendError,
    OutboundEmail,
    SendGridTransport,
    SmtpTransport,
    email_message_id,
)
from channels.twilio_api import close_twilio_client, describe_error, make_twilio_client
from service.channel_config import ChannelConfig
from service.delivery import TWILIO_STATUS, ProviderError, ProviderResult
from service.logs import get_logger
from service.routing import InboundRouter
from service.settings import Settings

log = get_logger("providers")

#: How far back the reconciliation looks for a message an ambiguous attempt may have created.
RECONCILE_WINDOW_SECONDS = 3600


def status_callback_url(base_url: str, message_id: str) -> str:
    # ":" and "~" stay as they are: both are legal in a query, and an HTTP client that
    # normalises "%3A" to ":" would otherwise change the URL Twilio signed.
    return f"{base_url}/twilio/status?m={quote(message_id, safe=':~')}"


class TwilioProvider:
    def __init__(self, settings: Settings, config: ChannelConfig):
        self.settings = settings
        self.config = config
        self.client = make_twilio_client(settings.twilio_account_sid, settings.twilio_auth_token,
                                         settings.twilio_api_url or None,
                                         timeout=config.retry.provider_timeout_seconds)

    async def close(self) -> None:
        await close_twilio_client(self.client)

    def _params(self, record: dict[str, str]) -> dict[str, str]:
        channel = record["channel"]
        sender = self.config.sender(channel)
        to = f"whatsapp:{record['address']}" if channel == "whatsapp" else record["address"]
        params = {"to": to, "status_callback": status_callback_url(
            self.settings.webhook_base_url, record["message_id"])}
        if sender.messaging_service_sid:
            params["messaging_service_sid"] = sender.messaging_service_sid
        else:
            params["from_"] = sender.from_number or ""
        if record.get("content_sid"):
            params["content_sid"] = record["content_sid"]
            params["content_variables"] = record.get("content_variables") or "{}"
        else:
            params["body"] = record["body"]
        return params

    async def send(self, record: dict[str, str]) -> ProviderResult:
        try:
            message = await self.client.messages.create_async(**self._params(record))
        except (TimeoutError, TwilioException, aiohttp.ClientError) as error:
            raise _provider_error(error) from error
        segments = int(message.num_segments) if str(message.num_segments or "").isdigit() else None
        return ProviderResult(message.sid, TWILIO_STATUS.get(message.status or "", "submitted"),
                              segments)

    async def find_sent(self, record: dict[str, str]) -> str | None:
        """Twilio has no idempotency key on create; this is the reconciliation: the messages to
        this number created since shortly before our first attempt, matched on the body (for a
        WhatsApp template, whose body Twilio fills in, on the time window alone)."""
        params = self._params(record)
        since = float(record.get("created") or 0) - 60
        try:
            found = await self.client.messages.list_async(to=params["to"], limit=50)
        except (TimeoutError, TwilioException, aiohttp.ClientError) as error:
            raise _provider_error(error) from error
        for message in found:
            created = message.date_created
            if created is not None and created.replace(tzinfo=created.tzinfo or UTC) \
                    < datetime.fromtimestamp(since, UTC):
                continue
            if message.direction and not message.direction.startswith("outbound"):
                continue
            if "body" in params and (message.body or "") != params["body"]:
                continue
            return message.sid
        return None


def _provider_error(error: Exception) -> ProviderError:
    failure = describe_error(error)
    code = str(failure.code or failure.status or "") or None
    return ProviderError(failure.kind, failure.detail[:300], code)


class EmailProvider:
    def __init__(self, settings: Settings, config: ChannelConfig, router: InboundRouter):
        self.settings = settings
        self.config = config
        self.router = router
        if config.email.transport == "sendgrid":
            self.transport = SendGridTransport(settings.sendgrid_api_key,
                                               api_base_url=settings.sendgrid_api_url)
        else:
            self.transport = SmtpTransport(
                settings.smtp_host, settings.smtp_port, username=settings.smtp_username or None,
                password=settings.smtp_password or None, starttls=settings.smtp_starttls,
                timeout=config.retry.provider_timeout_seconds,
                validate_certs=settings.smtp_validate_certs)

    async def close(self) -> None:
        close = getattr(self.transport, "close", None)
        if close is not None:
            await close()

    async def build(self, record: dict[str, str]) -> OutboundEmail:
        email = self.config.email
        references = tuple(json.loads(record["references"])) if record.get("references") else ()
        return OutboundEmail(
            message_id=record["message_id"], to_address=record["address"],
            from_address=email.from_address, from_name=email.from_name,
            reply_to=await self.router.reply_address(record["conversation_id"], email.reply_domain),
            subject=record.get("subject") or "", text=record["body"],
            language=record.get("language") or "en",
            in_reply_to=record.get("in_reply_to") or None, references=references,
            unsubscribe_url=record.get("unsubscribe_url") or "", domain=email.reply_domain,
            # an agent's message is a person writing: not marked auto-generated (RFC 3834)
            automated=record.get("kind") != "agent")

    async def send(self, record: dict[str, str]) -> ProviderResult:
        outbound = await self.build(record)
        header_id = email_message_id(record["message_id"], self.config.email.reply_domain)
        # Remembered before sending: a reply can come back faster than we return.
        await self.router.remember_thread(header_id, record["conversation_id"],
                                          record["message_id"])
        try:
            result = await self.transport.send(outbound)
        except EmailSendError as error:
            kind = "permanent" if error.kind == "permanent" else "retry"
            raise ProviderError(kind, str(error.detail)[:300],
                                str(error.status) if error.status else None) from error
        return ProviderResult(result.provider_message_id or header_id.strip("<>"), "sent")

    async def find_sent(self, record: dict[str, str]) -> str | None:
        return None
