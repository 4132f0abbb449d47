"""The inbound SMTP listener for real: a running aiosmtpd server on a free loopback port,
real clients (smtplib, aiosmtplib), real messages. Accepted mail reaches the callback and
only then gets 250; foreign recipients are refused (no open relay); a failing callback
means 451 and the retry is delivered; an unreadable message is refused for good; an
oversized one gets 552."""

from __future__ import annotations

import smtplib
from email import policy
from email.message import EmailMessage

import aiosmtplib
import pytest

from channels.email_inbound import ParsedEmail, parse_mime
from channels.smtp_inbound import InboundSmtpHandler, start_smtp_listener, stop
from service.stack import free_port

DOMAIN = "reply.nudge.example"
REPLY_ADDRESS = f"reply+c0nv3rs4t10n@{DOMAIN}"
SIZE_LIMIT = 20_000


class Inbox:
    """The callback the gateway would pass: parses each message, as the gateway does, and
    keeps it. ``fail_next`` makes the next delivery fail like a Redis outage would."""

    def __init__(self) -> None:
        self.received: list[tuple[ParsedEmail, str, list[str]]] = []
        self.fail_next = 0

    async def __call__(self, raw: bytes, envelope_from: str, envelope_to: list[str]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("store unavailable")
        self.received.append((parse_mime(raw, envelope_to=envelope_to), envelope_from,
                              envelope_to))


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def listener(inbox):
    port = free_port()
    controller = start_smtp_listener(None, port, InboundSmtpHandler(inbox, {DOMAIN}),
                                     data_size_limit=SIZE_LIMIT)
    yield port
    stop(controller)


def a_reply(body: str = "Ik betaal vrijdag.", **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = headers.get("From", "Jan Jansen <jan@example.nl>")
    mail["To"] = REPLY_ADDRESS
    mail["Subject"] = "Re: Uw rekening"
    mail["Message-ID"] = headers.get("Message_ID", "<CAF=smtp.1@mail.example.nl>")
    mail.set_content(body + "\n\nOp 12 nov. 2026 om 10:00 schreef Nudge <c@nudge.example>:\n"
                            "> Beste Jan,\n")
    return mail


def wire(mail: EmailMessage) -> bytes:
    return mail.as_bytes(policy=policy.SMTP)       # CRLF line endings, as on the wire


def connect(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("mail.example.nl")
    return client


def send_raw(port: int, sender: str, recipients: list[str], raw: bytes) -> tuple[int, bytes]:
    """One transaction step by step, so every reply code can be seen; returns DATA's."""
    with connect(port) as client:
        assert client.mail(sender)[0] == 250
        for recipient in recipients:
            client.rcpt(recipient)
        return client.data(raw)


def test_a_reply_is_accepted_after_the_callback_has_it(listener, inbox):
    code, _ = send_raw(listener, "jan@example.nl", [REPLY_ADDRESS], wire(a_reply()))
    assert code == 250
    [(parsed, envelope_from, envelope_to)] = inbox.received
    assert (envelope_from, envelope_to) == ("jan@example.nl", [REPLY_ADDRESS])
    assert (parsed.from_address, parsed.text, parsed.to_addresses[0]) == (
        "jan@example.nl", "Ik betaal vrijdag.", REPLY_ADDRESS)


def test_recipient_domains_are_matched_without_case(listener, inbox):
    with connect(listener) as client:
        client.sendmail("jan@example.nl", ["Reply+X@REPLY.Nudge.Example"], wire(a_reply()))
    assert inbox.received[0][2] == ["Reply+X@REPLY.Nudge.Example"]


@pytest.mark.parametrize("recipient", [
    "someone@example.nl",                        # relaying
    f"reply+x@{DOMAIN}.evil.example",            # our domain as a prefix
    f"reply+x@evil{DOMAIN}",
    "postmaster",                                # no domain at all
])
def test_foreign_recipients_are_refused(listener, inbox, recipient):
    with connect(listener) as client:
        client.mail("spammer@example.com")
        code, message = client.rcpt(recipient)
        assert (code, message.split()[0]) == (550, b"5.1.1")
        with pytest.raises(smtplib.SMTPDataError) as no_data:     # no recipient, no DATA
            client.data(b"Subject: x\r\n\r\nx")
        assert no_data.value.smtp_code == 503
    assert inbox.received == []


def test_only_our_recipients_reach_the_callback(listener, inbox):
    with connect(listener) as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("jan@example.nl", ["someone@example.nl"], wire(a_reply()))
    with connect(listener) as client:
        refused = client.sendmail("jan@example.nl", ["someone@example.nl", REPLY_ADDRESS],
                                  wire(a_reply()))
    assert list(refused) == ["someone@example.nl"] and refused["someone@example.nl"][0] == 550
    assert [envelope_to for _, _, envelope_to in inbox.received] == [[REPLY_ADDRESS]]


def test_a_failing_callback_means_try_again_and_the_retry_is_delivered(listener, inbox):
    inbox.fail_next = 1
    raw = wire(a_reply())
    code, message = send_raw(listener, "jan@example.nl", [REPLY_ADDRESS], raw)
    assert (code, message) == (451, b"4.3.0 try again later")
    assert inbox.received == []
    assert send_raw(listener, "jan@example.nl", [REPLY_ADDRESS], raw)[0] == 250
    assert [p.message_id for p, _, _ in inbox.received] == ["CAF=smtp.1@mail.example.nl"]


def test_an_unreadable_message_is_refused_for_good(listener, inbox):
    code, message = send_raw(listener, "jan@example.nl", [REPLY_ADDRESS],
                             b"Subject: no sender here\r\n\r\nIk betaal vrijdag.\r\n")
    assert (code, message.split()[0]) == (550, b"5.6.0")
    assert inbox.received == []


def test_an_oversized_message_is_refused(listener, inbox):
    big = wire(a_reply(("x" * 70 + "\n") * (SIZE_LIMIT // 35)))
    # A client that declares SIZE (RFC 1870) is refused at MAIL ...
    with connect(listener) as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("jan@example.nl", [REPLY_ADDRESS], big)
    assert refused.value.smtp_code == 552
    # ... one that does not, after DATA
    assert send_raw(listener, "jan@example.nl", [REPLY_ADDRESS], big)[0] == 552
    assert inbox.received == []


def test_a_bounce_with_the_null_sender_is_accepted(listener, inbox):
    bounce = a_reply("Delivery failed.", From="MAILER-DAEMON@mx.example.nl",
                     Message_ID="<bounce.1@mx.example.nl>")
    assert send_raw(listener, "<>", [REPLY_ADDRESS], wire(bounce))[0] == 250
    [(parsed, envelope_from, _)] = inbox.received
    assert (envelope_from, parsed.auto_reply) == ("", "bounce")


def test_too_many_recipients(listener, inbox):
    with connect(listener) as client:
        client.mail("jan@example.nl")
        codes = [client.rcpt(f"r{n}@{DOMAIN}")[0] for n in range(51)]
    assert codes == [250] * 50 + [452]


@pytest.mark.asyncio
async def test_an_async_client_delivers_a_non_ascii_message(listener, inbox):
    mail = a_reply("Ik betaal € 50 op vrijdag — groet, Jan")
    errors, response = await aiosmtplib.send(
        mail, hostname="127.0.0.1", port=listener, sender="jan@example.nl",
        recipients=[REPLY_ADDRESS], timeout=10)
    assert errors == {} and response.startswith("OK")
    assert inbox.received[0][0].text == "Ik betaal € 50 op vrijdag — groet, Jan"


def test_a_listener_needs_a_domain():
    for domains in (set(), {""}, {" . "}):
        with pytest.raises(ValueError, match="accepted domain"):
            InboundSmtpHandler(Inbox(), domains)
