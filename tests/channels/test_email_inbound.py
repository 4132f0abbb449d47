"""Inbound email parsing: reply stripping against email_reply_parser's own fixtures (every
expectation in expected.json) and our multilingual cases, MIME as mail clients write it
(alternatives, HTML only, charsets, transfer encodings, attachments, bounces, out-of-office,
huge bodies), SendGrid Inbound Parse in both modes, and junk that must only ever raise
EmailParseError."""

from __future__ import annotations

import json
import re
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email_inbound import (
    Attachment,
    EmailParseError,
    ParsedEmail,
    auto_reply_reason,
    parse_mime,
    parse_sendgrid_fields,
    parse_sendgrid_raw,
    reply_fragments,
    strip_reply,
)

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
SUITES = ("email_reply_parser_github", "email_reply_parser_zapier")
REPLY_ADDRESS = "reply+c0nv3rs4t10n@reply.nudge.example"
SMTP_LF = policy.SMTP.clone(linesep="\n")


# --- the reply parser fixtures, one test per expectation ---------------------------------

def _fixture_text(suite: str, name: str) -> str:
    # newline="" keeps the CRLF endings of email_1_7.txt as they are on disk
    with open(TESTDATA / suite / "emails" / name, encoding="utf-8", newline="") as handle:
        return handle.read()


# "note" entries that only describe a fixture; any other note is an expectation below.
DESCRIPTIVE_NOTES = {
    "Windows CRLF line endings",
    "differs from github repo's email_2_3.txt",
    "performance / ReDoS guard",
}
VISIBLE_TEXT_NOTE = "parse_reply(body) == read(body).visible_text"
INDEXED_KINDS = ("fragment_equals", "fragment_regex", "fragment_contains")
FLAG_KINDS = ("quoted", "signature", "hidden")
REPLY_KINDS = ("parse_reply_equals", "visible_reply_implied", "reply_strip_equals")


def _expectations() -> list:
    params = []
    for suite in SUITES:
        expected = json.loads((TESTDATA / suite / "expected.json").read_text(encoding="utf-8"))
        for name, checks in expected.items():
            if name == "_note":
                continue
            if name == "_inline_cases":
                for number, case in enumerate(checks):
                    for kind, value in case.items():
                        if kind != "input":
                            params.append(pytest.param(
                                suite, None, case["input"], kind, None, value,
                                id=f"{suite[19:]}/inline{number}/{kind}"))
                continue
            text = _fixture_text(suite, name)
            for kind, value in checks.items():
                if kind in INDEXED_KINDS:
                    for index, item in value.items():
                        params.append(pytest.param(suite, name, text, kind, int(index), item,
                                                   id=f"{suite[19:]}/{name}/{kind}[{index}]"))
                elif kind in ("reply_contains", "reply_not_contains"):
                    for number, item in enumerate(value):
                        params.append(pytest.param(suite, name, text, kind, number, item,
                                                   id=f"{suite[19:]}/{name}/{kind}[{number}]"))
                elif kind == "note" and value in DESCRIPTIVE_NOTES:
                    continue
                else:
                    params.append(pytest.param(suite, name, text, kind, None, value,
                                               id=f"{suite[19:]}/{name}/{kind}"))
    return params


def _visible(text: str) -> str:
    return "\n".join(f.content.strip() for f in reply_fragments(text)
                     if not (f.hidden or f.quoted))


@pytest.mark.parametrize(("suite", "name", "text", "kind", "index", "expected"),
                         _expectations())
def test_reply_parser_fixture(suite, name, text, kind, index, expected):
    if kind == "max_seconds":
        started = time.perf_counter()
        reply_fragments(text)
        strip_reply(text)
        assert time.perf_counter() - started < expected
        return
    fragments = reply_fragments(text)
    reply = strip_reply(text)
    if kind == "fragment_count":
        assert len(fragments) == expected
    elif kind in FLAG_KINDS:
        assert [getattr(f, kind) for f in fragments] == expected
    elif kind == "fragment_equals":
        assert fragments[index].content == expected
    elif kind == "fragment_regex":
        # Ruby's ^ matches at every line start
        assert re.search(expected, fragments[index].content, re.MULTILINE)
    elif kind == "fragment_contains":
        assert expected in fragments[index].content
    elif kind in REPLY_KINDS:
        assert reply == expected
    elif kind == "reply_contains":
        assert expected in reply
    elif kind == "reply_not_contains":
        assert expected not in reply
    elif kind == "note" and expected == VISIBLE_TEXT_NOTE:
        assert reply == _visible(text)
    else:
        pytest.fail(f"expectation {kind!r} of {suite}/{name} has no check")


def test_every_expectation_names_a_fixture_on_disk():
    for suite in SUITES:
        expected = json.loads((TESTDATA / suite / "expected.json").read_text(encoding="utf-8"))
        on_disk = {p.name for p in (TESTDATA / suite / "emails").glob("*.txt")}
        assert {name for name in expected if not name.startswith("_")} <= on_disk


# --- our languages -----------------------------------------------------------------------

NUDGE_MAIL = (
    "Beste Jan,\n\nU heeft nog een openstaand bedrag van EUR 120,00.\n"
    "Betaal via https://pay.nudge.example/p/abc\n\nMet vriendelijke groet,\nNudge Incasso\n")


def _quoted(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines())


MULTILINGUAL = [
    pytest.param(
        "Ik betaal vrijdag de helft.\n\n"
        "Op 12 nov. 2026 om 10:00 schreef Nudge <incasso@nudge.example>:\n\n" + _quoted(NUDGE_MAIL),
        "Ik betaal vrijdag de helft.", id="nl-gmail"),
    pytest.param(
        "Ik betaal vrijdag.\n\nOp di 12 nov. 2026 om 10:00 schreef Nudge Incasso <\n"
        "incasso@nudge.example>:\n\n" + _quoted(NUDGE_MAIL),
        "Ik betaal vrijdag.", id="nl-gmail-wrapped-header"),
    pytest.param(
        "Klopt, ik betaal morgen.\n\nOp 12 nov. 2026, om 10:00 heeft Nudge <incasso@nudge.example>"
        " het volgende geschreven:\n\n" + _quoted(NUDGE_MAIL),
        "Klopt, ik betaal morgen.", id="nl-apple-mail"),
    pytest.param(
        "Ich zahle am Freitag.\n\n"
        "Am 12.11.2026 um 10:00 schrieb Nudge <inkasso@nudge.example>:\n\n" + _quoted(NUDGE_MAIL),
        "Ich zahle am Freitag.", id="de-apple-mail"),
    pytest.param(
        "Ich zahle am Freitag.\n\nAm Di., 12. Nov. 2026 um 10:00 Uhr schrieb Nudge Inkasso <\n"
        "inkasso@nudge.example>:\n" + _quoted(NUDGE_MAIL),
        "Ich zahle am Freitag.", id="de-gmail-wrapped-header"),
    pytest.param(
        "Ich habe schon bezahlt.\n-----Ursprüngliche Nachricht-----\nVon: Nudge\n" + NUDGE_MAIL,
        "Ich habe schon bezahlt.", id="de-original-message"),
    pytest.param(
        "I paid yesterday.\n\nFrom: Nudge Collections <collections@nudge.example>\n"
        "Sent: Tuesday, November 12, 2026 10:00 AM\nTo: Jan Jansen <jan@example.nl>\n"
        "Subject: Your account\n\n" + NUDGE_MAIL,
        "I paid yesterday.", id="en-outlook"),
    pytest.param(
        "Ik heb al betaald.\n\nVan: Nudge Incasso <incasso@nudge.example>\n"
        "Verzonden: dinsdag 12 november 2026 10:00\nAan: Jan Jansen <jan@example.nl>\n"
        "Onderwerp: Uw rekening\n\n" + NUDGE_MAIL,
        "Ik heb al betaald.", id="nl-outlook"),
    pytest.param(
        "Ich habe schon bezahlt.\n\nVon: Nudge Inkasso <inkasso@nudge.example>\n"
        "Gesendet: Dienstag, 12. November 2026 10:00\nAn: Jan Jansen <jan@example.de>\n"
        "Betreff: Ihr Konto\n\n" + NUDGE_MAIL,
        "Ich habe schon bezahlt.", id="de-outlook"),
    pytest.param(
        "Ik heb al betaald.\n________________________________\nVan: Nudge <incasso@nudge.example>\n"
        "Verzonden: dinsdag 12 november 2026 10:00\nAan: Jan\nOnderwerp: Uw rekening\n\n"
        + NUDGE_MAIL,
        "Ik heb al betaald.", id="nl-outlook-line-directly-under"),
    pytest.param(
        "Je paierai vendredi.\n\nLe mar. 12 nov. 2026 à 10:00, Nudge <recouvrement@nudge.example>"
        " a écrit :\n\n" + _quoted(NUDGE_MAIL),
        "Je paierai vendredi.", id="fr-gmail"),
    pytest.param(
        "Pagaré el viernes.\n\nEl mar, 12 nov 2026 a las 10:00, Nudge (<cobros@nudge.example>)"
        " escribió:\n\n" + _quoted(NUDGE_MAIL),
        "Pagaré el viernes.", id="es-gmail"),
    pytest.param(
        "Pagherò venerdì.\n\nIl giorno mar 12 nov 2026 alle ore 10:00 Nudge <x@nudge.example>"
        " ha scritto:\n\n" + _quoted(NUDGE_MAIL),
        "Pagherò venerdì.", id="it-gmail"),
    pytest.param("I will pay on Friday.\n\nSent from my iPhone", "I will pay on Friday.",
                 id="en-iphone"),
    pytest.param("Ik betaal vrijdag.\n\nVerzonden vanaf mijn iPhone", "Ik betaal vrijdag.",
                 id="nl-iphone"),
    pytest.param("Ich zahle am Freitag.\n\nVon meinem iPhone gesendet", "Ich zahle am Freitag.",
                 id="de-iphone"),
    pytest.param("Je paierai vendredi.\n\nEnvoyé de mon iPhone", "Je paierai vendredi.",
                 id="fr-iphone"),
    pytest.param("Ik betaal vrijdag.\nVerzonden vanaf mijn Samsung Galaxy-smartphone.",
                 "Ik betaal vrijdag.", id="nl-android-no-blank-line"),
    pytest.param("Ik betaal vrijdag.\n\n-- \nJan Jansen\n06 12345678", "Ik betaal vrijdag.",
                 id="signature-delimiter"),
    pytest.param("Ik betaal vrijdag.\n-- \nJan Jansen\n06 12345678", "Ik betaal vrijdag.",
                 id="signature-delimiter-no-blank-line"),
    pytest.param("Ik betaal vrijdag.\n\nVerzonden vanaf mijn iPhone\n\n"
                 "> Op 12 nov. 2026 om 10:00 schreef Nudge <incasso@nudge.example>:\n>\n"
                 + _quoted(NUDGE_MAIL),
                 "Ik betaal vrijdag.", id="nl-iphone-quote-below-signature"),
    pytest.param(_quoted(NUDGE_MAIL), "", id="all-quoted"),
    pytest.param("Op 12 nov. 2026 om 10:00 schreef Nudge <incasso@nudge.example>:\n\n"
                 + _quoted(NUDGE_MAIL), "", id="only-header-and-quote"),
    pytest.param("Van: Nudge <incasso@nudge.example>\nVerzonden: dinsdag 12 november 2026\n"
                 "Aan: Jan\nOnderwerp: Uw rekening\n\n" + NUDGE_MAIL, "",
                 id="forward-with-nothing-new"),
    pytest.param("Op 12 nov. 2026 om 10:00 schreef Nudge <incasso@nudge.example>:\n\n"
                 + _quoted(NUDGE_MAIL) + "\n\nIk heb gisteren al betaald.",
                 "Ik heb gisteren al betaald.", id="nl-bottom-post"),
    pytest.param("On Monday I wrote:\nI can pay 50 a month.", "On Monday I wrote:\nI can pay 50 a"
                 " month.", id="en-sentence-not-a-header"),
    pytest.param("Ik schreef op 3 maart al:\nik heb betaald.",
                 "Ik schreef op 3 maart al:\nik heb betaald.", id="nl-sentence-not-a-header"),
    pytest.param("Afwezig tot maandag.\nDaarna betaal ik.",
                 "Afwezig tot maandag.\nDaarna betaal ik.", id="plain-text-untouched"),
]


@pytest.mark.parametrize(("text", "expected"), MULTILINGUAL)
def test_strip_reply_keeps_only_the_new_text(text, expected):
    assert strip_reply(text) == expected
    assert strip_reply(text.replace("\n", "\r\n")) == expected


def test_language_hint_adds_that_languages_outlook_headers():
    text = ("Jag betalar på fredag.\n\nFrån: Nudge <inkasso@nudge.example>\n"
            "Skickat: den 12 november 2026 10:00\nTill: Jan\nÄmne: Ditt konto\n\n" + NUDGE_MAIL)
    assert strip_reply(text, "sv") == "Jag betalar på fredag."
    assert strip_reply(text, "sv-SE") == "Jag betalar på fredag."
    assert "Från:" in strip_reply(text)          # Swedish headers only when hinted


def test_a_backslash_in_a_reply_header_is_just_text():
    # email_reply_parser itself fed this header into re.sub as a template: "bad escape \\d"
    text = "Hoi\n\nOn 1 Jan 2026, C:\\docs\\x wrote:\n> x"
    assert strip_reply(text) == "Hoi"


def test_inline_answers_between_quotes_are_kept():
    text = ("On Tue, Nov 12, 2026 at 10:00 AM Nudge <c@nudge.example> wrote:\n"
            "> Can you pay EUR 120 this month?\n\nNo, EUR 60.\n\n> Or in two parts?\n\n"
            "Yes, two parts is fine.\n")
    assert strip_reply(text) == "No, EUR 60.\nYes, two parts is fine."


# --- MIME --------------------------------------------------------------------------------

def a_mail(body: str = "Ik betaal vrijdag.", **headers: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = headers.pop("From", "Jan Jansen <Jan.Jansen@Example.NL>")
    mail["To"] = headers.pop("To", f"Nudge <{REPLY_ADDRESS}>")
    mail["Subject"] = headers.pop("Subject", "Re: Uw rekening")
    mail["Message-ID"] = headers.pop("Message_ID", "<CAF=abc.123@mail.example.nl>")
    mail["Date"] = headers.pop("Date", "Thu, 12 Nov 2026 10:00:00 +0100")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail


def test_a_plain_reply_becomes_an_inbound_message():
    mail = a_mail("Ik betaal vrijdag.\n\nOp 12 nov. 2026 om 10:00 schreef Nudge <c@n.example>:\n"
                  "> Beste Jan,\n", In_Reply_To="<nudge.abc@nudge.example>",
                  References="<first@x.example> <nudge.abc@nudge.example>", Cc="Piet <piet@x.nl>")
    parsed = parse_mime(mail.as_bytes())
    assert parsed.message_id == "CAF=abc.123@mail.example.nl"
    assert parsed.from_address == "jan.jansen@example.nl"
    assert parsed.to_addresses == (REPLY_ADDRESS, "piet@x.nl")
    assert parsed.in_reply_to == ("nudge.abc@nudge.example",)
    assert parsed.references == ("first@x.example", "nudge.abc@nudge.example")
    assert parsed.text == "Ik betaal vrijdag."
    assert parsed.full_text.startswith("Ik betaal vrijdag.\n\nOp 12 nov.")
    assert parsed.date == 1794474000.0
    assert (parsed.auto_reply, parsed.attachments, parsed.truncated) == (None, (), False)
    message = parsed.to_inbound(received_at=1.5)
    assert (message.channel, message.address, message.body, message.to, message.provider) == (
        "email", "jan.jansen@example.nl", "Ik betaal vrijdag.", REPLY_ADDRESS, "smtp")
    assert (message.message_id, message.received_at, message.media_urls) == (
        "CAF=abc.123@mail.example.nl", 1.5, ())


def test_the_display_name_is_never_the_address():
    mail = a_mail(From='"boss@nudge.example" <real.sender@example.nl>')
    assert parse_mime(mail.as_bytes()).from_address == "real.sender@example.nl"


def test_encoded_subject_and_sender_name_are_decoded():
    mail = a_mail(From="=?utf-8?q?J=C3=A4n?= <jan@example.nl>",
                  Subject="=?iso-8859-1?q?Re=3A_Uw_rekening_=E9=E9n?=")
    parsed = parse_mime(mail.as_bytes())
    assert (parsed.subject, parsed.from_address) == ("Re: Uw rekening één", "jan@example.nl")


def test_envelope_and_delivery_recipients_come_first():
    mail = a_mail(To="Someone <someone@example.nl>", Delivered_To=REPLY_ADDRESS)
    parsed = parse_mime(mail.as_bytes(), envelope_to=["Other+X@Reply.Nudge.Example"])
    assert parsed.to_addresses == ("other+x@reply.nudge.example", REPLY_ADDRESS,
                                   "someone@example.nl")
    assert parsed.to_inbound(0).to == "other+x@reply.nudge.example"


def test_without_message_id_the_content_is_the_id():
    mail = a_mail()
    del mail["Message-ID"]
    first, again = parse_mime(mail.as_bytes()), parse_mime(mail.as_bytes())
    assert first.message_id == again.message_id
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", first.message_id)
    mail.set_content("Ik betaal zaterdag.")
    assert parse_mime(mail.as_bytes()).message_id != first.message_id


@pytest.mark.parametrize("sender", [None, "", "undisclosed-recipients:;", "Jan Jansen", "<>"])
def test_no_sender_address_is_a_parse_error(sender):
    mail = a_mail()
    del mail["From"]
    if sender is not None:
        mail["From"] = sender
    with pytest.raises(EmailParseError, match="no From address"):
        parse_mime(mail.as_bytes())


def test_plain_text_is_preferred_over_html():
    mail = a_mail("Ik betaal vrijdag (plain).")
    mail.add_alternative("<p>Ik betaal vrijdag (html).</p>", subtype="html")
    assert parse_mime(mail.as_bytes()).text == "Ik betaal vrijdag (plain)."


def test_html_only_mail_is_read_as_text():
    mail = a_mail()
    mail.set_content(
        "<html><head><style>p {color: red}</style></head><body>"
        "<p>Ik heb <b>al</b> betaald, zie <a href='https://bank.example/r/1'>mijn bon</a>.<br>"
        "<img src='cid:logo' alt='logo'></p>"
        "<div class='gmail_quote'><div>Op 12 nov. 2026 om 10:00 schreef Nudge "
        "&lt;incasso@nudge.example&gt;:</div><blockquote>Beste Jan,<br>betaal aub.</blockquote>"
        "</div></body></html>", subtype="html")
    parsed = parse_mime(mail.as_bytes())
    assert parsed.text == "Ik heb al betaald, zie [mijn bon](https://bank.example/r/1)."
    assert "> Beste Jan," in parsed.full_text
    assert "color" not in parsed.full_text and "logo" not in parsed.full_text


def test_an_outlook_html_reply_in_dutch():
    mail = a_mail()
    mail.set_content(
        '<html><body><div class="WordSection1"><p class="MsoNormal">Ik heb vorige week al '
        'betaald.<o:p></o:p></p><p class="MsoNormal"><o:p>&nbsp;</o:p></p>'
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt"><p class="MsoNormal">'
        "<b>Van:</b> Nudge Incasso &lt;incasso@nudge.example&gt; <br>"
        "<b>Verzonden:</b> dinsdag 12 november 2026 10:00<br>"
        "<b>Aan:</b> Jan Jansen &lt;jan@example.nl&gt;<br><b>Onderwerp:</b> Uw rekening"
        '</p></div><p class="MsoNormal">Beste Jan,</p><p>Betaal aub.</p></div></body></html>',
        subtype="html")
    assert parse_mime(mail.as_bytes()).text == "Ik heb vorige week al betaald."


def test_every_text_part_is_read():
    mail = a_mail("Hierbij de foto van de bon.")
    mail.add_attachment(b"\xff\xd8\xff" + b"\0" * 10, maintype="image", subtype="jpeg",
                        disposition="inline")
    mail.add_attachment("Groet, Jan", disposition="inline")
    mail.get_payload()[-1].del_param("filename", header="content-disposition")
    parsed = parse_mime(mail.as_bytes())
    assert parsed.text == "Hierbij de foto van de bon.\n\nGroet, Jan"
    assert [a.content_type for a in parsed.attachments] == ["image/jpeg"]


def test_a_multipart_without_boundary_is_read_as_text():
    raw = (b"From: jan@example.nl\r\nContent-Type: multipart/mixed\r\n\r\n"
           b"Ik betaal vrijdag.\r\n")
    assert parse_mime(raw).text == "Ik betaal vrijdag."


def test_html_layout_tables_keep_their_cells_apart():
    mail = a_mail()
    mail.set_content("<table><tr><td>Bedrag</td><td>EUR 60</td></tr></table>", subtype="html")
    assert parse_mime(mail.as_bytes()).text == "Bedrag EUR 60"


@pytest.mark.parametrize(("charset", "text"), [
    ("iso-8859-1", "Ik betaal € 50 aan “Nudge” — café"),     # really Windows-1252, as sent
    ("windows-1252", "Ik betaal € 50 aan “Nudge” — café"),
    ("iso-2022-jp", "金曜日に払います"),
    ("koi8-r", "Я заплачу в пятницу"),
    ("utf-8", "Ik betaal vrijdag ✓ 🙂"),
])
def test_charsets(charset, text):
    encoding = "cp1252" if charset == "iso-8859-1" else charset
    raw = (f"From: jan@example.nl\r\nTo: {REPLY_ADDRESS}\r\nMessage-ID: <c@x>\r\n"
           f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n"
           "\r\n").encode() + text.encode(encoding)
    assert parse_mime(raw).text == text


def _raw_text_part(charset_param: str, body: bytes, cte: str = "8bit") -> bytes:
    return (f"From: jan@example.nl\r\nMessage-ID: <c@x>\r\nContent-Type: text/plain"
            f"{charset_param}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode() + body


def test_bad_utf8_bytes_become_replacement_characters():
    raw = _raw_text_part("; charset=utf-8", b"Ik betaal \xff\xfe vrijdag")
    assert parse_mime(raw).text == "Ik betaal \ufffd\ufffd vrijdag"


@pytest.mark.parametrize(("label", "body", "text"), [
    ("; charset=x-unknown-charset", "Ik betaal €5".encode(), "Ik betaal €5"),
    ("; charset=x-unknown-charset", "café".encode("cp1252"), "café"),
    ("; charset=us-ascii", "café".encode(), "café"),      # a wrong 7-bit label
    ("", "café".encode("cp1252"), "café"),                # no label at all
    ("; charset=rot13", b"Ik betaal", "Ik betaal"),       # a codec, but not a text encoding
])
def test_unknown_or_wrong_charset_labels_fall_back(label, body, text):
    assert parse_mime(_raw_text_part(label, body)).text == text


def test_quoted_printable_and_base64():
    qp = _raw_text_part("; charset=utf-8", b"Ik betaal =E2=82=AC 50 op vrijda=\r\ng.",
                        "quoted-printable")
    b64 = _raw_text_part("; charset=utf-8", b"SWsgYmV0YWFsIOKCrCA1MCBvcCB2cmlqZGFnLg==", "base64")
    assert parse_mime(qp).text == parse_mime(b64).text == "Ik betaal € 50 op vrijdag."


def test_attachments_are_listed_never_read():
    mail = a_mail("Hierbij het betaalbewijs.")
    mail.add_related(b"\x89PNG\r\n\x1a\n" + b"\0" * 100, maintype="image", subtype="png",
                     cid="<logo@x>")
    mail.add_attachment(b"%PDF-1.4 secret-bank-data", maintype="application", subtype="pdf",
                        filename="../../etc/bewijs.pdf")
    mail.add_attachment("notities", filename="notes.txt")
    parsed = parse_mime(mail.as_bytes())
    assert parsed.text == "Hierbij het betaalbewijs."
    assert parsed.attachments == (
        Attachment("attachment-1.png", "image/png", 108),
        Attachment("bewijs.pdf", "application/pdf", 25),
        Attachment("notes.txt", "text/plain", 9),
    )
    assert "secret-bank-data" not in repr(parsed)
    assert parsed.to_inbound(0).media_urls == (
        "attachment:attachment-1.png", "attachment:bewijs.pdf", "attachment:notes.txt")


def test_a_forwarded_message_is_an_attachment_not_the_text():
    inner = a_mail("Dit is de oude mail.", From="someone@else.example")
    mail = a_mail("Zie de doorgestuurde mail.")
    mail.add_attachment(inner)
    parsed = parse_mime(mail.as_bytes())
    assert parsed.text == "Zie de doorgestuurde mail."
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("attachment-1.eml", "message/rfc822")]


def test_a_huge_body_is_truncated_before_it_is_stripped():
    body = "Ik betaal vrijdag.\n\n" + ("> " + "x" * 70 + "\n") * 200_000   # ~14 MB
    mail = a_mail(body)
    started = time.perf_counter()
    parsed = parse_mime(mail.as_bytes(), max_body_chars=20_000)
    elapsed = time.perf_counter() - started
    assert parsed.truncated and len(parsed.full_text) == 20_000
    assert parsed.text == "Ik betaal vrijdag."
    assert elapsed < 10          # a guard against unbounded work, not a benchmark


def test_huge_html_is_truncated_too():
    mail = a_mail()
    mail.set_content("<p>Ik betaal vrijdag.</p>" + "<div>oud</div>" * 100_000, subtype="html")
    parsed = parse_mime(mail.as_bytes(), max_body_chars=1_000)
    assert parsed.truncated and len(parsed.full_text) <= 1_000
    assert parsed.text.startswith("Ik betaal vrijdag.")


def test_a_body_of_exactly_the_cap_is_not_truncated():
    parsed = parse_mime(a_mail("x" * 999).as_bytes(), max_body_chars=1_000)   # + "\n"
    assert not parsed.truncated and parsed.full_text == "x" * 999 + "\n"


# --- machines, not people ----------------------------------------------------------------

def a_bounce(original: bytes, returned_as: str = "message/rfc822") -> bytes:
    """A delivery status notification as Postfix writes it (RFC 3464)."""
    if returned_as == "text/rfc822-headers":
        original = original.split(b"\n\n")[0] + b"\n"
    return b"""\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.example.nl>
To: bounces@nudge.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce.1@mx.example.nl>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not be delivered.

<jan@example.nl>: host mx.example.nl said: 550 5.1.1 mailbox unavailable

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.nl

Final-Recipient: rfc822; jan@example.nl
Action: failed
Status: 5.1.1

--B1
Content-Type: """ + returned_as.encode() + b"""

""" + original + b"""
--B1--
"""


def our_outbound() -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Nudge Incasso <incasso@nudge.example>"
    mail["To"] = "jan@example.nl"
    mail["Subject"] = "Uw rekening"
    mail["Message-ID"] = "<nudge.abcdefghijklmnopqrstuvwxyz@nudge.example>"
    mail["Auto-Submitted"] = "auto-generated"
    mail["List-Unsubscribe"] = "<https://nudge.example/unsubscribe/x>"
    mail.set_content(NUDGE_MAIL)
    return mail


@pytest.mark.parametrize("returned_as", ["message/rfc822", "text/rfc822-headers"])
def test_a_bounce_names_the_message_it_returns(returned_as):
    parsed = parse_mime(a_bounce(our_outbound().as_bytes(policy=SMTP_LF), returned_as))
    assert parsed.auto_reply == "bounce"
    assert parsed.bounced_message_ids == ("nudge.abcdefghijklmnopqrstuvwxyz@nudge.example",)
    assert parsed.message_id == "bounce.1@mx.example.nl"


def test_a_plain_text_bounce_quoting_the_original_headers():
    mail = a_mail("Your message could not be delivered.\n\n------ Original message ------\n"
                  "Message-ID: <nudge.zzz@nudge.example>\nSubject: Uw rekening\n",
                  From="MAILER-DAEMON@mx.example.nl", Subject="failure notice")
    parsed = parse_mime(mail.as_bytes())
    assert parsed.auto_reply == "bounce"
    assert parsed.bounced_message_ids == ("nudge.zzz@nudge.example",)


def test_only_a_bounce_has_bounced_ids():
    mail = a_mail("Message-ID: <looks.like@a-header>")
    assert parse_mime(mail.as_bytes()).bounced_message_ids == ()


@pytest.mark.parametrize("subject", [
    "Automatic reply: Uw rekening", "Out of Office: Re: Uw rekening", "[Out of office]",
    "Automatisch antwoord: Uw rekening", "Afwezig", "Afwezig: Uw rekening",
    "Automatische Antwort: Ihr Konto", "Abwesenheitsnotiz: Ihr Konto",
    "Réponse automatique : Votre compte", "Respuesta automática: Su cuenta",
    "Risposta automatica: Il suo conto", "Autosvar: Ditt konto", "Auto-Reply: Your account",
])
def test_out_of_office_subjects(subject):
    assert parse_mime(a_mail(Subject=subject).as_bytes()).auto_reply == "out_of_office"


@pytest.mark.parametrize("subject", [
    "Re: Uw rekening", "Afwezig tot maandag, ik betaal daarna", "Out of money until Friday",
    "Absence de paiement", "Re: Automatic reply: Uw rekening",
])
def test_subjects_a_person_writes(subject):
    assert parse_mime(a_mail(Subject=subject).as_bytes()).auto_reply is None


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Auto_Submitted": "auto-replied"}, "auto_submitted"),
    ({"Auto_Submitted": "auto-generated; owner-email=x@y"}, "auto_submitted"),
    ({"Auto_Submitted": "no"}, None),
    ({"X_Autoreply": "yes"}, "auto_submitted"),
    ({"X_Autorespond": "Thanks for your mail"}, "auto_submitted"),
    ({"Precedence": "auto_reply"}, "auto_submitted"),
    ({"Return_Path": "<>"}, "auto_submitted"),
    ({"Return_Path": "<jan@example.nl>"}, None),
    ({"Precedence": "bulk"}, "bulk"),
    ({"Precedence": "junk"}, "bulk"),
    ({"Precedence": "list"}, "mailing_list"),
    ({"List_Id": "<debtors.lists.example>"}, "mailing_list"),
    ({"List_Unsubscribe": "<mailto:leave@lists.example>"}, "mailing_list"),
    ({"X_Failed_Recipients": "jan@example.nl"}, "bounce"),
    # Outlook sets this on ordinary mail: it asks *others* not to auto-reply
    ({"X_Auto_Response_Suppress": "All"}, None),
    ({"X_Auto_Response_Suppress": "OOF, AutoReply"}, None),
])
def test_auto_reply_headers(headers, reason):
    assert parse_mime(a_mail(**headers).as_bytes()).auto_reply == reason


def test_postmaster_is_a_bounce_and_a_read_receipt_is_automatic():
    assert parse_mime(a_mail(From="postmaster@example.nl").as_bytes()).auto_reply == "bounce"
    receipt = a_mail("Your message was displayed.")
    receipt.make_mixed()
    receipt.replace_header("Content-Type", "multipart/report; report-type=disposition-notification;"
                           f' boundary="{receipt.get_boundary()}"')
    assert auto_reply_reason(receipt) == "auto_submitted"


def test_a_null_envelope_sender_is_automatic():
    mail = a_mail()
    assert auto_reply_reason(mail) is None
    assert auto_reply_reason(mail, null_sender=True) == "auto_submitted"
    assert parse_mime(mail.as_bytes(), envelope_from="").auto_reply == "auto_submitted"
    assert parse_mime(mail.as_bytes(), envelope_from="jan@example.nl").auto_reply is None


# --- SendGrid Inbound Parse --------------------------------------------------------------

HEADERS_BLOCK = (
    "Received: from mail.example.nl by mx.sendgrid.net\n"
    "Message-ID: <CAF=sg.1@mail.example.nl>\n"
    "In-Reply-To: <nudge.abc@nudge.example>\n"
    "References: <first@x> <nudge.abc@nudge.example>\n"
    "Date: Thu, 12 Nov 2026 10:00:00 +0100\n"
    "From: Jan Jansen <Jan@Example.NL>\n"
    f"To: {REPLY_ADDRESS}\n"
    "Subject: Re: Uw rekening\n"
    "Content-Language: nl\n")


def sendgrid_fields(**changes: str | bytes) -> dict[str, str | bytes]:
    fields: dict[str, str | bytes] = {
        "headers": HEADERS_BLOCK,
        "dkim": "{@example.nl : pass}",
        "to": REPLY_ADDRESS,
        "cc": "",
        "from": "Jan Jansen <Jan@Example.NL>",
        "text": "Ik betaal vrijdag.\n\nOp 12 nov. 2026 om 10:00 schreef Nudge <c@nudge.example>:\n"
                "> Beste Jan,\n",
        "html": "<p>Ik betaal vrijdag.</p>",
        "sender_ip": "192.0.2.1",
        "envelope": json.dumps({"to": [REPLY_ADDRESS], "from": "jan@example.nl"}),
        "attachments": "0",
        "subject": "Re: Uw rekening",
        "charsets": json.dumps({"to": "UTF-8", "html": "UTF-8", "subject": "UTF-8",
                                "from": "UTF-8", "text": "UTF-8"}),
        "SPF": "pass",
    }
    fields.update(changes)
    return fields


def test_sendgrid_default_mode():
    parsed = parse_sendgrid_fields(sendgrid_fields())
    assert isinstance(parsed, ParsedEmail)
    assert parsed.message_id == "CAF=sg.1@mail.example.nl"
    assert parsed.from_address == "jan@example.nl"
    assert parsed.to_addresses == (REPLY_ADDRESS,)
    assert parsed.subject == "Re: Uw rekening"
    assert parsed.in_reply_to == ("nudge.abc@nudge.example",)
    assert parsed.references == ("first@x", "nudge.abc@nudge.example")
    assert parsed.text == "Ik betaal vrijdag."
    assert parsed.date == 1794474000.0
    assert (parsed.auto_reply, parsed.provider, parsed.attachments) == (None, "sendgrid", ())
    assert parsed.to_inbound(0).provider == "sendgrid"


def test_sendgrid_fields_as_bytes_follow_charsets():
    fields = sendgrid_fields(
        text="Ik betaal € 50, “graag”.".encode("cp1252"),
        subject="Re: één".encode("iso-8859-1"),
        charsets=json.dumps({"text": "windows-1252", "subject": "iso-8859-1"}))
    parsed = parse_sendgrid_fields(fields)
    assert (parsed.text, parsed.subject) == ("Ik betaal € 50, “graag”.", "Re: één")


def test_sendgrid_html_only():
    parsed = parse_sendgrid_fields(sendgrid_fields(
        text="", html="<p>Ik heb <a href='https://bank.example/1'>betaald</a>.</p>"))
    assert parsed.text == "Ik heb [betaald](https://bank.example/1)."


def test_sendgrid_attachments_from_the_form_or_from_attachment_info():
    info = json.dumps({
        "attachment2": {"filename": "bon.pdf", "name": "bon.pdf", "type": "application/pdf"},
        "attachment1": {"filename": "foto.jpg", "type": "image/jpeg", "content-id": "ii_1"}})
    fields = sendgrid_fields(attachments="2", **{"attachment-info": info})
    from_form = parse_sendgrid_fields(fields, {"attachment1": ("foto.jpg", "image/jpeg", 2048),
                                               "attachment2": ("bon.pdf", "application/pdf", 99)})
    assert from_form.attachments == (Attachment("foto.jpg", "image/jpeg", 2048),
                                     Attachment("bon.pdf", "application/pdf", 99))
    from_info = parse_sendgrid_fields(fields)
    assert from_info.attachments == (Attachment("foto.jpg", "image/jpeg", None),
                                     Attachment("bon.pdf", "application/pdf", None))
    assert from_info.to_inbound(0).media_urls == ("attachment:foto.jpg", "attachment:bon.pdf")


def test_sendgrid_envelope_recipient_first_then_headers_and_fields():
    fields = sendgrid_fields(to="Someone <someone@example.nl>", cc="piet@x.nl",
                             envelope=json.dumps({"to": [REPLY_ADDRESS], "from": "j@x.nl"}))
    assert parse_sendgrid_fields(fields).to_addresses == (
        REPLY_ADDRESS, "someone@example.nl", "piet@x.nl")


def test_sendgrid_without_message_id_uses_a_stable_digest():
    fields = sendgrid_fields(
        headers=HEADERS_BLOCK.replace("Message-ID: <CAF=sg.1@mail.example.nl>\n", ""))
    first, again = parse_sendgrid_fields(fields), parse_sendgrid_fields(dict(fields))
    assert first.message_id == again.message_id and first.message_id.startswith("sha256:")


def test_sendgrid_auto_replies_and_bounces_come_from_the_headers_block():
    auto = parse_sendgrid_fields(
        sendgrid_fields(headers=HEADERS_BLOCK + "Auto-Submitted: auto-replied\n"))
    assert auto.auto_reply == "auto_submitted"
    bounce = parse_sendgrid_fields(sendgrid_fields(
        headers=HEADERS_BLOCK.replace("From: Jan Jansen <Jan@Example.NL>",
                                      "From: MAILER-DAEMON@mx.example.nl"),
        **{"from": "MAILER-DAEMON@mx.example.nl",
           "text": "Delivery failed.\n\nMessage-ID: <nudge.q@nudge.example>\n"}))
    assert (bounce.auto_reply, bounce.bounced_message_ids) == ("bounce", ("nudge.q@nudge.example",))
    null_sender = parse_sendgrid_fields(sendgrid_fields(
        envelope=json.dumps({"to": [REPLY_ADDRESS], "from": ""})))
    assert null_sender.auto_reply == "auto_submitted"


@pytest.mark.parametrize("changes", [
    {"from": "", "headers": ""},
    {"from": "Jan Jansen", "headers": "Subject: x\n"},
])
def test_sendgrid_without_a_sender_is_a_parse_error(changes):
    with pytest.raises(EmailParseError):
        parse_sendgrid_fields(sendgrid_fields(**changes))


def test_sendgrid_raw_mode():
    mail = a_mail("Ik betaal vrijdag.\n\n-- \nJan")
    raw_fields = {"email": mail.as_bytes(), "to": REPLY_ADDRESS, "from": "jan@example.nl",
                  "subject": "Re: Uw rekening", "dkim": "{@example.nl : pass}", "SPF": "pass",
                  "sender_ip": "192.0.2.1", "charsets": "{}",
                  "envelope": json.dumps({"to": ["bcc+x@reply.nudge.example"],
                                          "from": "jan@example.nl"})}
    parsed = parse_sendgrid_raw(raw_fields)
    assert (parsed.text, parsed.provider, parsed.message_id) == (
        "Ik betaal vrijdag.", "sendgrid", "CAF=abc.123@mail.example.nl")
    assert parsed.to_addresses == ("bcc+x@reply.nudge.example", REPLY_ADDRESS)
    as_text = parse_sendgrid_raw({**raw_fields, "email": mail.as_string()})
    assert as_text.text == parsed.text


def test_sendgrid_raw_mode_without_the_message_is_a_parse_error():
    with pytest.raises(EmailParseError, match="email field"):
        parse_sendgrid_raw({"to": REPLY_ADDRESS, "headers": HEADERS_BLOCK})


# --- junk in, EmailParseError out --------------------------------------------------------

HEADER_NAMES = ["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                "Auto-Submitted", "Return-Path", "Delivered-To", "Content-Language", "List-Id"]
JUNK_TOKENS = st.sampled_from([
    "<", ">", "@", '"', "(", ")", "[", "]", ":", ";", ",", ".", "\\", "=?", "?=", "=?utf-8?q?",
    "=?x-bad?b?", "?q?", "=ZZ", " ", "\t", "\r\n", "\r\n\t", "a", "é", "€", "\x00", "\x7f",
    "multipart/mixed", "multipart/report", "; boundary=b", "report-type=delivery-status",
    "message/rfc822", "text/plain; charset=x-unknown", "text/html", "base64", "quoted-printable",
    "attachment; filename*=utf-8''%E9%ZZ", "--b\r\n", "--b--", "2026", "+0100", "Mon,"])
JUNK = st.lists(JUNK_TOKENS, max_size=30).map("".join)


@st.composite
def junk_messages(draw) -> bytes:
    lines = [f"{draw(st.sampled_from(HEADER_NAMES))}: {draw(JUNK)}"
             for _ in range(draw(st.integers(0, 10)))]
    body = draw(st.one_of(JUNK, st.just("--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--")))
    prefix = draw(st.binary(max_size=40)) if draw(st.booleans()) else b""
    return prefix + ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8", "surrogatepass")


def only_parse_errors(parse, *args, **kwargs) -> None:
    try:
        result = parse(*args, **kwargs)
    except EmailParseError:
        return
    assert isinstance(result, ParsedEmail) and result.from_address


JUNK_SETTINGS = settings(max_examples=300, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


@JUNK_SETTINGS
@given(st.binary(max_size=2_000))
def test_random_bytes_only_raise_parse_errors(raw):
    only_parse_errors(parse_mime, raw)


@JUNK_SETTINGS
@given(junk_messages())
def test_header_junk_only_raises_parse_errors(raw):
    only_parse_errors(parse_mime, raw)
    only_parse_errors(parse_sendgrid_raw, {"email": raw})
    only_parse_errors(parse_sendgrid_fields, {"headers": raw, "text": raw, "from": raw[:60]})


SENDGRID_FIELDS = st.sampled_from(["from", "to", "cc", "subject", "text", "html", "headers",
                                   "envelope", "charsets", "attachment-info", "email"])


@JUNK_SETTINGS
@given(st.dictionaries(SENDGRID_FIELDS, st.one_of(JUNK, st.text(max_size=80),
                                                  st.binary(max_size=80))),
       st.dictionaries(st.text(max_size=12),
                       st.tuples(st.text(max_size=20), st.text(max_size=20),
                                 st.integers(0, 10**9)), max_size=3))
def test_random_sendgrid_fields_only_raise_parse_errors(fields, files):
    only_parse_errors(parse_sendgrid_fields, fields, files)
    only_parse_errors(parse_sendgrid_raw, fields)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=3_000))
def test_strip_reply_takes_any_text(text):
    assert isinstance(strip_reply(text), str)
