"""Outbound email: the MIME message as a receiving client parses it, the HTML alternative, and
both transports for real — SMTP into a local sink (plain, STARTTLS, AUTH, scripted refusals)
and the SendGrid API against a working fake."""

from __future__ import annotations

import dataclasses
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from channels.email_outbound import (
    EmailSendError,
    OutboundEmail,
    SendGridTransport,
    SmtpTransport,
    build_mime,
    email_message_id,
    render_html,
    sendgrid_payload,
)
from sandbox.fake_sendgrid import RESERVED_HEADERS, FakeSendGrid, create_app
from sandbox.smtp_sink import SmtpSink, self_signed_certificate, self_signed_context

ROOT = Path(__file__).resolve().parents[2]
UNSUBSCRIBE = "https://nudge.example/unsubscribe/tok.sig"
API_KEY = "SG.test-key"


def an_email(**changes: object) -> OutboundEmail:
    email = OutboundEmail(
        message_id="in123:0",
        to_address="jan@example.nl",
        from_address="incasso@nudge.example",
        from_name="Nudge Incasso",
        reply_to="reply+c0nv3rs4t10n@reply.nudge.example",
        subject="Your payment",
        text="Dear Jan,\n\nPlease pay at https://pay.example/p?a=1&b=2.\n\nUnsubscribe: "
             + UNSUBSCRIBE,
        language="en",
        in_reply_to="CAF=abc.123@mail.example.nl",
        references=("first.1@mail.example.nl",),
        unsubscribe_url=UNSUBSCRIBE,
        unsubscribe_mailto="unsubscribe@nudge.example",
        domain="nudge.example",
    )
    return dataclasses.replace(email, **changes)


def reparsed(message: EmailMessage) -> EmailMessage:
    """What a receiving client sees: the bytes on the wire, parsed back."""
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


# --- headers --------------------------------------------------------------------------------


def test_every_header_has_its_exact_value():
    before = time.time()
    message = reparsed(build_mime(an_email()))

    assert message["From"] == "Nudge Incasso <incasso@nudge.example>"
    assert message["To"] == "jan@example.nl"
    assert message["Reply-To"] == "reply+c0nv3rs4t10n@reply.nudge.example"
    assert message["Subject"] == "Your payment"
    assert message["Message-ID"] == email_message_id("in123:0", "nudge.example")
    assert message["In-Reply-To"] == "<CAF=abc.123@mail.example.nl>"
    assert message["References"] == "<first.1@mail.example.nl> <CAF=abc.123@mail.example.nl>"
    assert message["List-Unsubscribe"] == (
        f"<{UNSUBSCRIBE}>, <mailto:unsubscribe@nudge.example>")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert message["X-Nudge-Message-Id"] == "in123:0"
    assert message["MIME-Version"] == "1.0"
    sent = parsedate_to_datetime(message["Date"])
    assert sent.utcoffset() is not None and sent.utcoffset().total_seconds() == 0
    assert before - 1 <= sent.timestamp() <= time.time() + 1
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version"):
        assert len(message.get_all(name)) == 1, name


def test_body_is_text_then_html_in_utf8():
    message = reparsed(build_mime(an_email(text="Grüße, Jan — 120,00 €")))

    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part in parts:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
        assert "MIME-Version" not in part
    # text/* travels with CRLF line ends (RFC 2046 canonical form); clients show them as one
    assert parts[0].get_content().replace("\r\n", "\n") == "Grüße, Jan — 120,00 €\n"
    assert "Grüße, Jan — 120,00 €" in parts[1].get_content()


def test_the_wire_format_is_seven_bit_with_crlf():
    raw = build_mime(an_email(subject="Zahlung fällig", text="Grüße")).as_bytes()

    assert raw.isascii()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_non_ascii_subject_and_display_name_round_trip():
    subject = "Herinnering: €120,00 vóór 1 mei — bitte zahlen Sie bis zum 3. Mai, danke 🙂"
    name = 'Müller & Zöhne Inkasso, GmbH "Süd"'
    message = reparsed(build_mime(an_email(subject=subject, from_name=name)))

    assert message["Subject"] == subject
    sender = message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (name, "incasso@nudge.example")


def test_references_name_the_parent_once():
    message = reparsed(build_mime(an_email(
        in_reply_to="b@mail.example", references=("a@mail.example", "b@mail.example"))))
    assert message["References"] == "<a@mail.example> <b@mail.example>"

    first = reparsed(build_mime(an_email(in_reply_to=None, references=())))
    assert "In-Reply-To" not in first and "References" not in first


def test_list_unsubscribe_only_with_an_https_url():
    for url in ("", "http://127.0.0.1:8080/unsubscribe/tok.sig"):
        message = reparsed(build_mime(an_email(unsubscribe_url=url)))
        assert "List-Unsubscribe" not in message, url
        assert "List-Unsubscribe-Post" not in message, url

    https_only = reparsed(build_mime(an_email(unsubscribe_mailto=None)))
    assert https_only["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert https_only["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_person_s_message_is_not_marked_automatic():
    message = reparsed(build_mime(an_email(automated=False)))
    assert "Auto-Submitted" not in message and "X-Auto-Response-Suppress" not in message


@pytest.mark.parametrize("changes", [
    {"subject": "Hello\r\nBcc: everyone@example.com"},
    {"from_name": "Nudge\nBcc: everyone@example.com"},
    {"domain": "nudge.example>"},
    {"unsubscribe_url": "https://nudge.example/ünsubscribe"},
    {"unsubscribe_url": "https://nudge.example/a>, <https://evil.example/"},
])
def test_malformed_headers_are_refused_by_both_transports(changes):
    with pytest.raises(ValueError):
        build_mime(an_email(**changes))
    with pytest.raises(ValueError):
        sendgrid_payload(an_email(**changes))


def test_threading_ids_from_outside_are_tidied_not_fatal():
    """In-Reply-To and References come from the debtor's mail client: stray brackets are
    taken off, ids that are not ids are left out, and the reply still goes."""
    message = reparsed(build_mime(an_email(
        in_reply_to=" <parent@mail.example> ",
        references=("two ids@mail.example", "<root@mail.example>", "no-at-sign"))))
    assert message["In-Reply-To"] == "<parent@mail.example>"
    assert message["References"] == "<root@mail.example> <parent@mail.example>"

    broken = reparsed(build_mime(an_email(in_reply_to="not an id", references=())))
    assert "In-Reply-To" not in broken and "References" not in broken


# --- Message-ID -----------------------------------------------------------------------------


MESSAGE_ID = re.compile(r"^<nudge\.[a-z2-7]{26}@nudge\.example>$")


@given(st.text(min_size=1, max_size=200))
def test_message_id_is_deterministic(key):
    header = email_message_id(key, "nudge.example")
    assert header == email_message_id(key, "nudge.example")
    assert MESSAGE_ID.match(header)


def test_message_id_carries_only_a_hash_of_the_key():
    header = email_message_id("D-EN-001:jan@example.nl:0", "nudge.example")
    assert MESSAGE_ID.match(header)
    assert "jan" not in header and "D-EN" not in header.upper()


@given(st.lists(st.text(max_size=40), min_size=2, max_size=50, unique=True))
def test_message_ids_differ_per_key(keys):
    headers = {email_message_id(key, "nudge.example") for key in keys}
    assert len(headers) == len(keys)


def test_a_retry_builds_the_same_message_id():
    assert build_mime(an_email())["Message-ID"] == build_mime(an_email())["Message-ID"]
    assert (build_mime(an_email())["Message-ID"]
            != build_mime(an_email(message_id="in123:1"))["Message-ID"])


# --- HTML -----------------------------------------------------------------------------------


class _Page(HTMLParser):
    """What a browser makes of the page: tags, link targets, visible text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.lang: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "a":
            self.hrefs.append(values["href"])
        if tag == "html":
            self.lang = values.get("lang")

    def handle_data(self, data):
        self.text.append(data)


def page(text: str, language: str = "en") -> _Page:
    parser = _Page()
    parser.feed(render_html(text, language))
    return parser


def test_html_escapes_markup_in_the_text():
    html = render_html("Hi <script>alert('x')</script> & <b>bye</b>", "en")
    assert "<script>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;" in html

    parsed = page("Hi <script>alert('x')</script> & <b>bye</b>")
    assert "script" not in parsed.tags and "b" not in parsed.tags
    assert "Hi <script>alert('x')</script> & <b>bye</b>" in "".join(parsed.text)


def test_html_links_urls_with_escaped_ampersands():
    html = render_html("Pay at https://pay.example/p?a=1&b=2. Thanks", "en")
    assert 'href="https://pay.example/p?a=1&amp;b=2"' in html
    assert ">https://pay.example/p?a=1&amp;b=2</a>." in html  # the full stop stays outside

    assert page("Pay at https://pay.example/p?a=1&b=2.").hrefs == ["https://pay.example/p?a=1&b=2"]


def test_html_links_cannot_break_out_of_the_attribute():
    parsed = page('See https://x.example/"onmouseover="alert(1) and (https://y.example/a)')
    assert parsed.hrefs == ["https://x.example/", "https://y.example/a"]
    assert 'onmouseover="alert(1)' in "".join(parsed.text)
    assert "javascript" not in "".join(page("javascript:alert(1)").hrefs)


def test_html_keeps_paragraphs_and_line_breaks():
    html = render_html("Dear Jan,\n\nLine one\nLine two\r\n\r\n\n  \nBye", "nl")
    paragraphs = re.findall(r"<p[^>]*>(.*?)</p>", html, re.DOTALL)
    assert paragraphs == ["Dear Jan,", "Line one<br>\nLine two", "Bye"]
    assert page("x", "nl").lang == "nl"


def test_html_refuses_a_strange_language():
    with pytest.raises(ValueError):
        render_html("x", 'en" onload="x')


# --- SMTP -----------------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path):
    server = SmtpSink(tmp_path / "mail")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certificate() -> tuple[bytes, bytes]:
    return self_signed_certificate()


@pytest.fixture
def tls_sink(tmp_path, certificate):
    server = SmtpSink(tmp_path / "mail", require_auth=("nudge", "s3cret"),
                      starttls_context=self_signed_context(certificate))
    server.start()
    yield server
    server.stop()


def trusting(certificate: tuple[bytes, bytes]) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=certificate[0].decode())


@pytest.mark.asyncio
async def test_smtp_delivers_the_message(sink, tmp_path):
    transport = SmtpTransport("127.0.0.1", sink.port, starttls="never")
    result = await transport.send(an_email(subject="Grüße aus Köln"))

    [delivery] = sink.deliveries
    assert (delivery.mail_from, delivery.rcpt_tos) == ("incasso@nudge.example", ("jan@example.nl",))
    assert delivery.tls is False
    received = delivery.message
    assert received["Subject"] == "Grüße aus Köln"
    assert received["Message-ID"] == result.provider_message_id == email_message_id(
        "in123:0", "nudge.example")
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert received.get_body(("plain",)).get_content().startswith("Dear Jan,")
    assert abs(result.accepted_at - time.time()) < 5

    [file] = (tmp_path / "mail").glob("*.eml")
    assert file == delivery.path and file.name.startswith("000001-")
    assert BytesParser(policy=policy.default).parsebytes(file.read_bytes())["Message-ID"] == (
        received["Message-ID"])


@pytest.mark.asyncio
async def test_smtp_upgrades_to_tls_when_offered(tmp_path, certificate):
    with SmtpSink(tmp_path, starttls_context=self_signed_context(certificate)) as server:
        transport = SmtpTransport("127.0.0.1", server.port, validate_certs=False)
        await transport.send(an_email())
        assert [d.tls for d in server.deliveries] == [True]


@pytest.mark.asyncio
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_smtp_starttls_and_auth(tmp_path, certificate, mechanism):
    other = {"PLAIN": "LOGIN", "LOGIN": "PLAIN"}[mechanism]
    with SmtpSink(tmp_path, require_auth=("nudge", "s3cret"),
                  starttls_context=self_signed_context(certificate),
                  auth_exclude=[other]) as server:
        transport = SmtpTransport("127.0.0.1", server.port, "nudge", "s3cret",
                                  tls_context=trusting(certificate))
        await transport.send(an_email())

        [delivery] = server.deliveries
        assert (delivery.tls, delivery.authenticated_as) == (True, "nudge")
        assert server.auth_mechanisms == [mechanism]


@pytest.mark.asyncio
async def test_smtp_validates_certificates_by_default(tls_sink):
    transport = SmtpTransport("127.0.0.1", tls_sink.port, "nudge", "s3cret")
    with pytest.raises(EmailSendError) as raised:
        await transport.send(an_email())
    assert raised.value.kind == "retry" and "CertVerification" in raised.value.detail
    assert tls_sink.deliveries == []


@pytest.mark.asyncio
async def test_smtp_wrong_password_is_permanent(tls_sink):
    transport = SmtpTransport("127.0.0.1", tls_sink.port, "nudge", "wrong",
                              validate_certs=False)
    with pytest.raises(EmailSendError) as raised:
        await transport.send(an_email())
    assert (raised.value.kind, raised.value.status) == ("permanent", 535)


def test_smtp_never_sends_credentials_in_clear():
    with pytest.raises(ValueError):
        SmtpTransport("127.0.0.1", 25, "nudge", "s3cret", starttls="never")
    assert "s3cret" not in repr(SmtpTransport("127.0.0.1", 25, "nudge", "s3cret"))


@pytest.mark.asyncio
async def test_smtp_451_is_a_retry_and_the_retry_goes_through(sink):
    transport = SmtpTransport("127.0.0.1", sink.port)
    sink.fail_next(1, code=451)

    with pytest.raises(EmailSendError) as raised:
        await transport.send(an_email())
    assert (raised.value.kind, raised.value.status) == ("retry", 451)
    assert sink.messages == []

    await transport.send(an_email())
    assert len(sink.messages) == 1


@pytest.mark.asyncio
async def test_smtp_550_is_permanent_and_the_address_is_not_repeated(sink):
    sink.fail_permanently_for("jan@example.nl", code=550)
    transport = SmtpTransport("127.0.0.1", sink.port)

    with pytest.raises(EmailSendError) as raised:
        await transport.send(an_email())
    assert (raised.value.kind, raised.value.status) == ("permanent", 550)
    assert "jan@example.nl" not in str(raised.value)
    await transport.send(an_email(to_address="piet@example.nl"))
    assert [d.rcpt_tos for d in sink.deliveries] == [("piet@example.nl",)]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.asyncio
async def test_smtp_server_down_is_a_retry():
    transport = SmtpTransport("127.0.0.1", unused_port(), timeout=5)
    with pytest.raises(EmailSendError) as raised:
        await transport.send(an_email())
    assert raised.value.kind == "retry" and raised.value.status is None


@pytest.mark.asyncio
async def test_smtp_keeps_one_connection_inside_async_with(sink):
    async with SmtpTransport("127.0.0.1", sink.port) as transport:
        for n in range(3):
            await transport.send(an_email(message_id=f"in123:{n}"))
        sink.fail_next(1)
        with pytest.raises(EmailSendError):
            await transport.send(an_email(message_id="in123:3"))
        await transport.send(an_email(message_id="in123:3"))

    peers = [d.peer for d in sink.deliveries]
    assert len(peers) == 4
    assert peers[0] == peers[1] == peers[2]  # one connection for the first three
    assert peers[3] != peers[0]              # a failed send drops it; the next one reconnects


@pytest.mark.asyncio
async def test_smtp_without_async_with_connects_per_message(sink):
    transport = SmtpTransport("127.0.0.1", sink.port)
    await transport.send(an_email(message_id="a"))
    await transport.send(an_email(message_id="b"))
    first, second = (d.peer for d in sink.deliveries)
    assert first != second


def test_sink_numbers_files_after_those_already_there(tmp_path):
    (tmp_path / "000041-abcdef012345.eml").write_bytes(b"Subject: old\r\n\r\nold\r\n")
    with SmtpSink(tmp_path) as server:
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.send_message(build_mime(an_email()))
        [delivery] = server.deliveries
    assert delivery.path is not None and delivery.path.name.startswith("000042-")


# --- SendGrid -------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def sendgrid(aiohttp_server):
    fake = FakeSendGrid(API_KEY)
    server = await aiohttp_server(create_app(fake))
    return fake, str(server.make_url("")).rstrip("/")


@pytest.mark.asyncio
async def test_sendgrid_accepts_and_returns_its_message_id(sendgrid):
    fake, base_url = sendgrid
    async with SendGridTransport(API_KEY, api_base_url=base_url) as transport:
        result = await transport.send(an_email(subject="Grüße"))

    [body] = fake.accepted
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", result.provider_message_id)
    assert body["personalizations"] == [{"to": [{"email": "jan@example.nl"}]}]
    assert body["from"] == {"email": "incasso@nudge.example", "name": "Nudge Incasso"}
    assert body["reply_to"] == {"email": "reply+c0nv3rs4t10n@reply.nudge.example"}
    assert body["subject"] == "Grüße"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["content"][0]["value"] == an_email().text
    assert body["content"][1]["value"] == render_html(an_email().text, "en")
    assert body["custom_args"] == {"nudge_message_id": "in123:0"}
    assert body["headers"] == {
        "Message-ID": email_message_id("in123:0", "nudge.example"),
        "In-Reply-To": "<CAF=abc.123@mail.example.nl>",
        "References": "<first.1@mail.example.nl> <CAF=abc.123@mail.example.nl>",
        "List-Unsubscribe": f"<{UNSUBSCRIBE}>, <mailto:unsubscribe@nudge.example>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "OOF, AutoReply",
        "X-Nudge-Message-Id": "in123:0",
    }
    assert not {name.lower() for name in body["headers"]} & RESERVED_HEADERS
    assert body["tracking_settings"]["click_tracking"]["enable"] is False
    assert body["tracking_settings"]["open_tracking"]["enable"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize(("status", "kind"), [
    (429, "retry"), (500, "retry"), (503, "retry"),
    (400, "permanent"), (403, "permanent"), (413, "permanent"),
])
async def test_sendgrid_status_decides_retry_or_permanent(sendgrid, status, kind):
    fake, base_url = sendgrid
    fake.fail_next(1, status, message="scripted")
    async with SendGridTransport(API_KEY, api_base_url=base_url) as transport:
        with pytest.raises(EmailSendError) as raised:
            await transport.send(an_email())
        assert (raised.value.kind, raised.value.status) == (kind, status)
        assert "scripted" in raised.value.detail

        await transport.send(an_email())  # the failure was for one request only
    assert len(fake.accepted) == 1


@pytest.mark.asyncio
async def test_sendgrid_400_carries_sendgrid_s_error_messages(sendgrid):
    fake, base_url = sendgrid
    async with SendGridTransport(API_KEY, api_base_url=base_url) as transport:
        with pytest.raises(EmailSendError) as raised:
            await transport.send(an_email(to_address="jan.example.nl"))
    assert (raised.value.kind, raised.value.status) == ("permanent", 400)
    assert raised.value.detail == (
        "SendGrid 400: personalizations.0.to.0.email: Does not contain a valid address.")
    assert fake.accepted == []


@pytest.mark.asyncio
async def test_sendgrid_wrong_key_is_permanent_401(sendgrid):
    _, base_url = sendgrid
    async with SendGridTransport("SG.wrong", api_base_url=base_url) as transport:
        with pytest.raises(EmailSendError) as raised:
            await transport.send(an_email())
    assert (raised.value.kind, raised.value.status) == ("permanent", 401)
    assert "authorization grant is invalid" in raised.value.detail
    assert "SG.wrong" not in repr(transport)


@pytest.mark.asyncio
async def test_sendgrid_unreachable_is_a_retry():
    async with SendGridTransport(API_KEY, api_base_url=f"http://127.0.0.1:{unused_port()}",
                                 timeout=5) as transport:
        with pytest.raises(EmailSendError) as raised:
            await transport.send(an_email())
    assert raised.value.kind == "retry"


@pytest.mark.asyncio
async def test_sendgrid_leaves_an_injected_session_open(sendgrid):
    _, base_url = sendgrid
    async with aiohttp.ClientSession() as session:
        transport = SendGridTransport(API_KEY, api_base_url=base_url, session=session)
        await transport.send(an_email())
        await transport.close()
        assert not session.closed


@pytest.mark.asyncio
async def test_fake_sendgrid_refuses_what_sendgrid_refuses(sendgrid):
    """The fake is only worth testing against if it is as strict as SendGrid."""
    fake, base_url = sendgrid
    good = sendgrid_payload(an_email())
    bad_payloads = {
        "reserved header": {**good, "headers": {**good["headers"], "Reply-To": "x@y.example"}},
        "html before text": {**good, "content": good["content"][::-1]},
        "no subject": {key: value for key, value in good.items() if key != "subject"},
        "no recipient": {**good, "personalizations": [{"to": []}]},
        "too many personalizations": {
            **good, "personalizations": [{"to": [{"email": "a@b.example"}]}] * 1001},
        "reply_to and reply_to_list": {**good, "reply_to_list": [{"email": "a@b.example"}]},
    }
    async with aiohttp.ClientSession() as session:
        for reason, payload in bad_payloads.items():
            async with session.post(f"{base_url}/v3/mail/send", json=payload,
                                    headers={"Authorization": f"Bearer {API_KEY}"}) as response:
                assert response.status == 400, reason
                assert (await response.json())["errors"][0]["message"], reason
    assert fake.accepted == []


def test_eml_files_are_whole_messages(tmp_path: Path):
    """A directory watcher never sees a partial file: only finished .eml files have the name."""
    with SmtpSink(tmp_path) as server, smtplib.SMTP("127.0.0.1", server.port) as client:
        for n in range(3):
            client.send_message(build_mime(an_email(message_id=f"m{n}")))
    assert sorted(p.name[:6] for p in tmp_path.iterdir()) == ["000001", "000002", "000003"]


def test_sink_runs_from_the_command_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.smtp_sink", "--port", "0", "--dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", banner).group(1))
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.send_message(build_mime(an_email()))
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    [file] = tmp_path.glob("*.eml")
    assert BytesParser(policy=policy.default).parsebytes(file.read_bytes())["Subject"] == (
        "Your payment")
