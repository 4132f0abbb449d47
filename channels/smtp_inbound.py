"""Our inbound SMTP listener (aiosmtpd): accept mail for our reply domains, nothing else.

The handler owns the SMTP answers; what happens to a message is the caller's async
``on_message(raw, envelope_from, envelope_to)``. "250" is said only after that callback
returned, so a message is never acknowledged and then lost: if it fails, "451" makes the
sending server keep the message and try again later. A message that can never be read
(:class:`EmailParseError`) is refused for good instead, so it bounces to its sender rather
than being retried for days.

Recipients outside the accepted domains are refused at RCPT: we are no open relay.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiosmtpd.controller import Controller

from channels.email_inbound import EmailParseError

__all__ = ["DATA_SIZE_LIMIT", "InboundSmtpHandler", "OnMessage", "start_smtp_listener", "stop"]

log = logging.getLogger(__name__)

DATA_SIZE_LIMIT = 10 * 1024 * 1024     # above it aiosmtpd answers 552 (RFC 1870 SIZE too)
MAX_RECIPIENTS = 50                    # a reply goes to one reply address; 50 is a spam run

OnMessage = Callable[[bytes, str, list[str]], Awaitable[None]]

REFUSED_RECIPIENT = "550 5.1.1 Recipient address rejected: not a domain we accept mail for"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
UNREADABLE = "550 5.6.0 Message could not be read"
TRY_AGAIN = "451 4.3.0 try again later"
ACCEPTED = "250 OK"


class InboundSmtpHandler:
    """An aiosmtpd handler (the ``handle_*`` hooks it calls)."""

    def __init__(self, on_message: OnMessage, accepted_domains: Iterable[str]) -> None:
        self.on_message = on_message
        self.accepted_domains = frozenset(d for d in map(_domain, accepted_domains) if d)
        if not self.accepted_domains:
            raise ValueError("an SMTP listener needs at least one accepted domain")

    async def handle_RCPT(self, server, session, envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if _domain(address.rpartition("@")[2]) not in self.accepted_domains:
            return REFUSED_RECIPIENT
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return ACCEPTED

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or b""
        try:
            await self.on_message(raw, _sender(envelope.mail_from), list(envelope.rcpt_tos))
        except EmailParseError as error:
            log.warning("inbound mail refused as unreadable: %s", _first_line(error))
            return UNREADABLE
        except Exception as error:  # noqa: BLE001 - any failure: a retry, never a loss
            # Only the type is logged: an exception's text may carry an address or a body.
            log.error("inbound mail callback failed, asked the sender to retry: %s",
                      type(error).__name__)
            return TRY_AGAIN
        return ACCEPTED


def _domain(domain: str) -> str:
    return domain.strip().strip("[]").rstrip(".").lower()


def _sender(mail_from: str | None) -> str:
    # The null reverse-path (bounces, auto-replies) arrives as "<>"; it is "" to callers.
    return "" if not mail_from or mail_from == "<>" else mail_from


def _first_line(error: Exception) -> str:
    return str(error).split("\n", 1)[0][:200]


def start_smtp_listener(host: str | None, port: int, handler: InboundSmtpHandler, *,
                        data_size_limit: int = DATA_SIZE_LIMIT) -> Controller:
    """Start a listener in its own thread and event loop (aiosmtpd's Controller), on
    loopback when host is None. Its callbacks run on that loop: a callback that uses clients
    bound to another loop (Redis, HTTP sessions) must be served on that loop instead, with
    ``loop.create_server(lambda: SMTP(handler, ...))`` as the gateway does."""
    controller = Controller(handler, hostname=host or "127.0.0.1", port=port,
                            data_size_limit=data_size_limit, enable_SMTPUTF8=True)
    controller.start()
    return controller


def stop(controller: Controller) -> None:
    controller.stop()
