"""Fuzzing the webhook parsers of the real gateway app (real Redis, real SMTP listener):
thousands of malformed bodies, never a 5xx, and the process stays up.

Hypothesis generates the inputs, the test sends them. Each test first collects a batch of
examples from a ``@given`` function that only records what it is given (``derandomize=True``
and no example database: the same bodies on every run and in CI), then posts them one by one
on its own event loop and records every answer that breaks a rule together with its input,
so a failure names the body that caused it without shrinking. Posting after generating also
leaves a place, after the last body, to check that the gateway is still up. Inputs that once
broke a parser are kept as explicit examples (the ``*_CORPUS`` lists), so they are sent on
every run whatever Hypothesis draws.

Most bodies are signed correctly (Twilio's HMAC over the configured public URL, SendGrid's
ECDSA, our own Nudge-Signature), so the parsers behind the signature checks are really
reached; a share is unsigned or wrongly signed and must be refused with 403.

Rules checked for every body: the answer is below 500; a refused signature is 403; a signed
Twilio message or status callback is 200/204 exactly when the channel parser accepts its
parameters and 400 (with a reason) otherwise; a signed SendGrid post is 200 or 400; a signed
payment is 200, 400 or 422. The SMTP listener answers 250 or a permanent refusal, never "451
try again" (the answer for an exception the parser should not have raised), and
``parse_mime`` itself returns a ParsedEmail or raises EmailParseError, nothing else. After
each batch the gateway still answers /healthz and still accepts a well-formed message.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import aiosmtplib
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from twilio.request_validator import RequestValidator
from yarl import URL

from channels.email_inbound import EmailParseError, ParsedEmail, parse_mime
from channels.sendgrid_inbound import SIGNATURE_HEADER, TIMESTAMP_HEADER
from channels.twilio_inbound import TwilioRequestError, parse_message, parse_status
from service import signatures
from service.debtor_store import RedisDebtorStore
from service.gateway import create_app
from service.importer import import_file
from service.keys import Keys
from service.settings import Settings
from service.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo_portfolio.csv"
PREFIX = "fuzz"
ACCOUNT = "AC" + "5" * 32
TOKEN = "fuzz-auth-token-" + "9" * 16
BASE = "https://nudge.example.com"          # the public URL Twilio signs, not our Host
PAYMENT_SECRET = "fuzz-payment-secret-" + "p" * 24
REPLY_DOMAIN = "reply.nudge.example"         # policies/channels.yml
MAX_FORM = 256 * 1024                        # the gateway's client_max_size
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SG_PUBLIC = base64.b64encode(SG_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
SG_OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
FORM = "application/x-www-form-urlencoded"
# what an HTTP client refuses to put in a header (aiohttp raises before sending)
HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# Debtors of data/demo_portfolio.csv, so that some fuzzed messages reach a real conversation.
DEBTOR_PHONES = ["+447400123001", "+447400123002", "+44 7400 123001"]
DEBTOR_EMAILS = ["oliver.bennett@example.org", "amelia.hartley@example.net"]
DEBTOR_IDS = ["D-EN-001", "D-EN-002", "D-DE-001"]
DEBTOR_REFERENCES = ["NWM-2026-62403", "HV-2026-59818"]


# --- generation ------------------------------------------------------------------------------
FUZZ_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.filter_too_much,
                                            HealthCheck.large_base_example])


def generate(strategy: st.SearchStrategy, count: int, corpus: Sequence = ()) -> list:
    """The `corpus` (inputs that once broke a parser: they stay in every run) and `count`
    examples of `strategy`, the same ones on every run (derandomized, no database). Nothing
    fails inside, so Hypothesis only generates."""
    found: list = []

    def collect(value):
        found.append(value)

    for value in corpus:
        collect = example(value)(collect)
    collect = given(strategy)(collect)
    settings(max_examples=count, **FUZZ_SETTINGS)(collect)()
    assert len(found) >= count * 0.9, f"Hypothesis generated only {len(found)} of {count}"
    return found


def huge(alphabet: st.SearchStrategy[str], low: int, high: int) -> st.SearchStrategy[str]:
    """A long value, made by repetition (Hypothesis does not draw megabytes itself)."""
    return st.builds(lambda s, n: (s or "x") * n, alphabet, st.integers(low, high))


HEX = "0123456789abcdef"
garbage_text = st.text(max_size=40)
sids = st.one_of(
    st.builds(lambda p, h: p + h, st.sampled_from(["SM", "MM", "IM"]), st.text(HEX, min_size=32, max_size=32)),
    st.builds(lambda p, h: p + h, st.sampled_from(["SM", "MM", "XX", "sm", "", "AC"]),
              st.text(HEX + "ABCDEFxyz-", max_size=36)),
)
phones = st.one_of(
    st.sampled_from(DEBTOR_PHONES + ["+31612345678", "whatsapp:+447400123002", "whatsapp:+31612345678",
                                     "+1", "whatsapp:", "+999999999999999999999", "0612345678",
                                     "tel:+31612345678", "whatsapp:whatsapp:+31612345678", "+", ""]),
    st.from_regex(r"(whatsapp:)?\+?[0-9 ()\-]{0,22}", fullmatch=True),
)
twilio_values = st.one_of(
    garbage_text, phones, sids, st.integers().map(str), huge(st.text(max_size=3), 300, 3000),
    st.sampled_from(["", " ", "0", "-1", "11", "٣", "1e3", "9" * 5000, "https://api.twilio.com/m/1",
                     "http://evil.example/x", "\x00", "%", "&", "=", "+", "%zz", "\ud7ff\ufeff",
                     "delivered", "undelivered", "failed", "read", "receiving", ACCOUNT]),
)
TWILIO_KEYS = ["From", "To", "Body", "MessageSid", "SmsSid", "SmsMessageSid", "AccountSid",
               "NumMedia", "MediaUrl0", "MediaUrl1", "MediaUrl9", "MediaContentType0",
               "ProfileName", "ButtonPayload", "ButtonText", "WaId", "MessageStatus",
               "SmsStatus", "ErrorCode", "NumSegments", "ApiVersion"]
twilio_keys = st.one_of(st.sampled_from(TWILIO_KEYS), garbage_text)


def valid_sms(sid: str, sender: str) -> list[tuple[str, str]]:
    return [("MessageSid", sid), ("AccountSid", ACCOUNT), ("From", sender),
            ("To", "+3197010520000"), ("Body", "how much do I owe"), ("NumMedia", "0")]


@st.composite
def twilio_pairs(draw, base: str) -> list[tuple[str, str]]:
    """Form parameters: all random, or a well-formed message (or status callback) with some
    fields replaced, dropped or repeated."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.lists(st.tuples(twilio_keys, twilio_values), max_size=14))
    sid = "SM" + draw(st.text(HEX, min_size=32, max_size=32))
    if base == "status":
        pairs = [("MessageSid", sid), ("AccountSid", ACCOUNT), ("MessageStatus", "delivered"),
                 ("To", "+31612345678"), ("From", "+3197010520000")]
    else:
        pairs = valid_sms(sid, draw(st.sampled_from(DEBTOR_PHONES + ["+31612345678"])))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["set", "set", "drop", "repeat", "add"]))
        key = draw(st.sampled_from(TWILIO_KEYS)) if action != "add" else draw(twilio_keys)
        value = draw(twilio_values)
        if action == "set":
            pairs = [(k, value if k == key else v) for k, v in pairs]
            if key not in dict(pairs):
                pairs.append((key, value))
        elif action == "drop":
            pairs = [(k, v) for k, v in pairs if k != key]
        elif action == "repeat":
            pairs.insert(draw(st.integers(0, len(pairs))), (key, value))
        else:
            pairs.append((key, value))
    return pairs


TWILIO_CONTENT_TYPES = [FORM] * 34 + [
    FORM + "; charset=utf-8", FORM + "; charset=UTF-8", "Application/X-WWW-Form-Urlencoded",
    FORM + "; charset=latin-1", FORM + "; charset=utf-16", FORM + "; charset=no-such-charset",
    FORM + "; charset=unicode_escape", FORM + "; charset=rot13", FORM + "; charset=undefined",
    FORM + "; charset=", FORM + ';charset="utf-8"', "text/plain", "application/json",
    "multipart/form-data; boundary=zz", "application/octet-stream", "", "garbage/\xff;;;"]
SIGNING = ["valid"] * 16 + ["none", "garbage", "other_token", "other_path", "settings_header"]


@dataclass
class TwilioCase:
    path: str
    content_type: str
    body: bytes
    signing: str
    settings_header: str | None


@st.composite
def twilio_cases(draw, paths: list[str], base: str) -> TwilioCase:
    path = draw(st.sampled_from(paths))
    if base == "status":
        query = draw(st.one_of(
            st.none(), st.sampled_from(["m1", "m2", "m3", "m4", "gone", ""]),
            garbage_text, huge(st.text(max_size=2), 100, 2000)))
        if query is not None:
            path += "?m=" + quote(query, safe="")
            if draw(st.booleans()):
                # sent as is (encoded=True): the raw path Twilio signs is the one we send
                path += "&" + draw(st.sampled_from(
                    ["m=m2", "bodySHA256=" + "0" * 64, "x=%FF", "m", "&&", "m=%E2%82"]))
    pairs = draw(twilio_pairs(base))
    encoded = urlencode(pairs).encode()
    how = draw(st.sampled_from(["form"] * 10 + ["truncated", "raw", "latin1", "inject", "huge"]))
    if how == "truncated":
        body = encoded[:draw(st.integers(0, max(len(encoded) - 1, 0)))]
    elif how == "raw":
        body = draw(st.binary(max_size=400))
    elif how == "latin1":
        body = urlencode(pairs, encoding="latin-1", errors="replace").encode()
    elif how == "inject":
        at = draw(st.integers(0, len(encoded)))
        body = encoded[:at] + draw(st.binary(min_size=1, max_size=8)) + encoded[at:]
    elif how == "huge":
        # beyond the gateway's 256 KB, or many small fields
        body = draw(st.sampled_from([encoded + b"&Body=" + b"A" * MAX_FORM,
                                     b"&".join([b"k=v"] * 1200) + b"&" + encoded,
                                     b"Body=" + b"%41" * 60_000 + b"&" + encoded]))
    else:
        body = encoded
    settings_header = None
    signing = draw(st.sampled_from(SIGNING))
    if signing == "settings_header":
        settings_header = draw(st.sampled_from(["key=k1,algorithm=HMAC_SHA256", "algorithm=MD5",
                                                 "algorithm=", ",,,", "key=\xe9"]))
    return TwilioCase(path, draw(st.sampled_from(TWILIO_CONTENT_TYPES)), body, signing,
                      settings_header)


def server_form(case: TwilioCase) -> MultiDict | None:
    """The form as the gateway reads it when it reaches the parser (aiohttp decodes the body
    as UTF-8 and splits it as parse_qsl does), or None when the request cannot get there."""
    if case.content_type not in (FORM, FORM + "; charset=utf-8", FORM + "; charset=UTF-8",
                                 FORM + ';charset="utf-8"', "Application/X-WWW-Form-Urlencoded"):
        return None
    if len(case.body) > MAX_FORM or case.body.count(b"&") >= 999:
        return None
    try:
        text = case.body.rstrip().decode("utf-8")
    except UnicodeDecodeError:
        return None
    return MultiDict(parse_qsl(text, keep_blank_values=True))


def twilio_headers(case: TwilioCase) -> dict[str, str]:
    headers = {"Content-Type": case.content_type}
    if case.settings_header is not None:
        headers["X-Twilio-Webhooks-Signature-Settings"] = case.settings_header
    form = server_form(case)
    if form is None:
        # sign what a lenient reading of the body gives: the gateway must still not crash
        form = MultiDict(parse_qsl(case.body.decode("utf-8", "replace"), keep_blank_values=True))
    url = BASE + case.path
    try:
        if case.signing in ("valid", "settings_header"):
            headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(url, form)
        elif case.signing == "other_token":
            headers["X-Twilio-Signature"] = RequestValidator("not-ours").compute_signature(url, form)
        elif case.signing == "other_path":
            headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature(
                BASE + "/twilio/elsewhere", form)
        elif case.signing == "garbage":
            headers["X-Twilio-Signature"] = base64.b64encode(case.body[:20] or b"x").decode()
    except UnicodeEncodeError:
        headers["X-Twilio-Signature"] = "unsignable"
    return headers


# Inputs that once got a 500 (kept in every run; see service/webhooks.py _signed_form).
_SIGNED_SMS = urlencode(valid_sms("SM" + "c" * 32, DEBTOR_PHONES[0])).encode()
TWILIO_CORPUS = [
    TwilioCase(path, content_type, body, signing, None)
    for path in ("/twilio/sms", "/twilio/whatsapp")
    for content_type, body, signing in [
        (FORM, b"Body=\xff\xfe&From=%2B31612345678", "none"),        # not UTF-8, unsigned
        (FORM, _SIGNED_SMS + b"&ProfileName=\xe9", "valid"),
        (FORM + "; charset=no-such-charset", _SIGNED_SMS, "valid"),   # LookupError
        (FORM + "; charset=rot13", _SIGNED_SMS, "none"),              # not a text codec
        (FORM + "; charset=undefined", _SIGNED_SMS, "none"),          # always UnicodeError
        (FORM + "; charset=unicode_escape", b"Body=\\ud800", "none"),  # a lone surrogate
        (FORM + "; charset=utf-16", b"B\x00o", "none"),
    ]]


# --- email: MIME messages and SendGrid forms ---------------------------------------------------
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-7", "koi8-r",
            "shift_jis", "gb2312", "big5", "unicode_escape", "rot13", "base64", "hex", "zlib",
            "idna", "punycode", "undefined", "x-unknown", "", '"utf-8"', "utf-8'en'", "\x00",
            "utf-8\r\n x"]
ADDRESSES = DEBTOR_EMAILS + [
    "Jonas <jonas.weber@example.org>", "<>", "@", "a@b@c", '"q\\"x"@example.org',
    "undisclosed-recipients:;", "mailer-daemon@mx.example", "x" * 300 + "@example.org",
    "=?utf-8?q?J=C3=B6rg?= <jorg@example.org>", "reply+abc@" + REPLY_DOMAIN, "<a@b>, <c@d>",
    "Name (comment <x@y>) <real@example.org>", "user@[127.0.0.1]", "ünï@exämple.org", "a\x00@b"]
HEADER_NAMES = ["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition",
                "Content-Language", "Auto-Submitted", "Precedence", "X-Autoreply", "Return-Path",
                "List-Id", "List-Unsubscribe", "Delivered-To", "X-Original-To", "MIME-Version",
                "X-Failed-Recipients", "Sender", "Reply-To"]
CONTENT_TYPES = ["text/plain", "text/html", "message/rfc822", "message/global",
                 "text/rfc822-headers", "message/delivery-status", "application/pdf",
                 "image/jpeg", "application/octet-stream", "text/", "/", "", "x", "text/plain/extra",
                 "multipart/alternative", "multipart/mixed", "multipart/report"]
ENCODINGS = [None, None, "base64", "quoted-printable", "7bit", "8bit", "binary", "x-uuencode",
             "uuencode", "gzip", "BASE64", "quoted-printable; x=y", "\xff"]


def b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


encoded_words = st.builds(
    lambda charset, enc, payload: b(f"=?{charset}?{enc}?{payload}?="),
    st.sampled_from(CHARSETS), st.sampled_from(["B", "Q", "b", "q", "X", ""]),
    st.text("ABCDEFabcdef0123456789+/=_?%", max_size=30))
header_values = st.one_of(
    st.text(max_size=60).map(b), st.binary(max_size=60), st.sampled_from(ADDRESSES).map(b),
    encoded_words, st.lists(encoded_words, max_size=4).map(b" ".join),
    st.sampled_from([b"", b" ", b"<", b"<>", b"<a@b> <c@d", b"\r\n continued", b"\r\n\r\nbody",
                     b"Mon, 32 Feb 99999 25:61:61 +9999", b"Thu, 01 Jan 1970 00:00:00 -0000",
                     b"Fri, 31 Dec 9999 23:59:59 -2359", b"auto-replied", b"bulk", b"list",
                     b"Automatic reply: your account", b"utf-8''%ff%fe%00", b";;;=\"",
                     b"attachment; filename*=utf-8''%E2%82; filename*0=a; filename*1*=%ff",
                     b"text/plain; charset*=utf-8'en'%ff; charset=x",
                     b"multipart/report; report-type=delivery-status; boundary=r"]),
    huge(st.sampled_from(["<a@b> ", "x", "=?utf-8?b?QQ==?= ", "\r\n "]), 200, 3000).map(b),
)


@st.composite
def content_type_header(draw, multipart_boundary: str | None) -> bytes:
    if multipart_boundary is not None:
        kind = draw(st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/related",
                                     "multipart/report; report-type=delivery-status",
                                     "multipart/form-data", "multipart/x-unknown"]))
        quoted = draw(st.booleans())
        boundary = f'"{multipart_boundary}"' if quoted else multipart_boundary
        return b(f"{kind}; boundary={boundary}") + draw(st.sampled_from([b"", b"; charset=utf-8",
                                                                           b"; boundary=other"]))
    kind = draw(st.sampled_from(CONTENT_TYPES))
    params = draw(st.lists(st.sampled_from(
        [f"charset={c}" for c in CHARSETS] + ["name=a.pdf", 'name="../../etc/passwd"',
                                              "name*=utf-8''%ff", "format=flowed", "=", "boundary=",
                                              "report-type=delivery-status"]), max_size=3))
    return b("; ".join([kind, *params]))


def leaf_payloads(encoding: str | None) -> st.SearchStrategy[bytes]:
    texts = st.one_of(
        st.text(max_size=200).map(b),
        st.builds(lambda t, c: t.encode(c, "replace"), st.text(max_size=120),
                  st.sampled_from(["utf-8", "latin-1", "cp1252", "utf-16", "koi8-r"])),
        st.sampled_from([b"Ich zahle am Freitag.\n\nAm 12.11.2026 um 10:00 schrieb Nudge <x@y>:\n> alt",
                         b"On Mon, 1 Jan 2026 at 10:00, X <x@y> wrote:\n> quoted\n> more",
                         b"-- \nsig", b"Sent from my iPhone", b"<html><body><p>Hi<table><tr><td>x",
                         b"<<<>>>&#xFFFFFFFF;&bogus;<script>", b"Message-ID: <orig@x>\n",
                         b"On " * 2000, b"\x00" * 50, b"\r" * 100, b".\r\n..\r\n."]),
        huge(st.sampled_from(["> quoted\n", "a", "<p>", "=\n"]), 100, 5000).map(b),
    )
    if encoding and encoding.lower().startswith("base64"):
        return st.one_of(texts.map(base64.b64encode), st.text("ABCDabcd0123+/=\n!*", max_size=200).map(b))
    if encoding and encoding.startswith("quoted-printable"):
        return st.one_of(texts, st.text("=0123456789ABCDEFabcdefxz\n\r ", max_size=200).map(b))
    return st.one_of(texts, st.binary(max_size=200))


@st.composite
def mime_parts(draw, depth: int = 0) -> bytes:
    """One MIME entity: random header lines (a From most of the time, at the top level) and
    a leaf payload or a multipart body, with broken boundaries now and then."""
    lines: list[bytes] = []
    if depth == 0 and draw(st.integers(0, 4)) > 0:
        lines.append(b"From: " + b(draw(st.sampled_from(ADDRESSES))))
    for _ in range(draw(st.integers(0, 6 if depth == 0 else 3))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=12)))
        separator = draw(st.sampled_from([b": ", b": ", b":", b" : ", b"", b"\x00: "]))
        lines.append(b(name) + separator + draw(header_values))
    multipart = depth < 3 and draw(st.integers(0, 3)) == 0
    boundary = draw(st.text("abcXYZ0123'()+_,-./:=? ", min_size=0, max_size=20)) if multipart else None
    lines.append(b"Content-Type: " + draw(content_type_header(boundary)))
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding is not None:
        lines.append(b"Content-Transfer-Encoding: " + b(encoding))
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    head = newline.join(lines)
    if boundary is None:
        if depth < 3 and draw(st.integers(0, 6)) == 0:
            payload = draw(mime_parts(depth + 1))         # message/rfc822-like nesting
        else:
            payload = draw(leaf_payloads(encoding))
        return head + newline + newline + payload
    children = draw(st.lists(mime_parts(depth + 1), max_size=3))
    used = draw(st.sampled_from([boundary, boundary, boundary + "x", "", "--"]))
    body = b"".join(b"--" + b(used) + newline + child + newline for child in children)
    ending = draw(st.sampled_from([b"--" + b(used) + b"--", b"--" + b(used) + b"--", b"", b"--" + b(used)]))
    preamble = draw(st.sampled_from([b"", b"This is a multi-part message.\r\n", b"--\r\n"]))
    return head + newline + newline + preamble + body + ending + newline


mime_messages = st.one_of(mime_parts(), mime_parts(), mime_parts(), st.binary(max_size=600),
                          st.text(max_size=300).map(b))

SG_FIELDS = ["email", "from", "to", "cc", "subject", "text", "html", "headers", "envelope",
             "charsets", "attachment-info", "attachment1", "attachments", "spam_score", "dkim",
             "SPF", "sender_ip"]
json_garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
sg_json = st.one_of(
    json_garbage.map(lambda v: b(json.dumps(v))),
    st.builds(lambda to, frm: b(json.dumps({"to": to, "from": frm})),
              st.lists(st.sampled_from(ADDRESSES) | garbage_text | st.integers(), max_size=3),
              st.sampled_from(ADDRESSES) | st.none() | st.integers() | st.just("")),
    st.builds(lambda names, cs: b(json.dumps(dict.fromkeys(names, cs))),
              st.lists(st.sampled_from(["text", "html", "from", "to", "subject"]), max_size=4),
              st.sampled_from(CHARSETS) | st.integers() | st.none()),
    st.builds(lambda n, fn, t: b(json.dumps({n: {"filename": fn, "type": t}})),
              st.sampled_from(["attachment1", "attachment99999999999", "x", ""]),
              st.sampled_from(["a.pdf", "../../x", "", "\x00"]) | st.integers() | st.none(),
              st.sampled_from(["image/png", "", "X/Y"]) | st.integers()),
    st.sampled_from([b"{", b"[]", b"null", b"\"\"", b"{\"to\": 5}", b"NaN", b"1e999999"]),
)


@st.composite
def sendgrid_parts(draw, boundary: str) -> bytes:
    name = draw(st.one_of(st.sampled_from(SG_FIELDS), st.text(max_size=10)))
    lines = [b"Content-Disposition: " + draw(st.sampled_from(
        [b"form-data; name=\"%s\"" % b(name), b"form-data; name=%s" % b(name), b"form-data",
         b"attachment; name=\"%s\"" % b(name), b"form-data; name*=utf-8''%ff%fe",
         b"form-data; name=\"%s\"; filename=\"%s\"" % (b(name), draw(header_values)),
         b"form-data; name=\"%s\"; name=\"email\"" % b(name)]))]
    if draw(st.booleans()):
        lines.append(b"Content-Type: " + draw(content_type_header(None)))
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding is not None:
        lines.append(b"Content-Transfer-Encoding: " + b(encoding))
    if name in ("envelope", "charsets", "attachment-info"):
        payload = draw(st.one_of(sg_json, st.binary(max_size=50)))
    elif name in ("email", "headers"):
        payload = draw(mime_messages)
    elif name in ("from", "to", "cc"):
        payload = draw(st.one_of(st.sampled_from(ADDRESSES).map(b), header_values))
    else:
        payload = draw(leaf_payloads(encoding))
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


@dataclass
class SendGridCase:
    content_type: str
    body: bytes
    signing: str


@st.composite
def sendgrid_cases(draw) -> SendGridCase:
    boundary = draw(st.one_of(st.just("fuzzBoundary" + "7" * 8),
                              st.text("abcXYZ0123'()+_,-./:=? ", max_size=30)))
    kind = draw(st.sampled_from(["form"] * 5 + ["broken", "raw_mime", "other_type"]))
    content_type = f"multipart/form-data; boundary={boundary}"
    if kind in ("form", "broken"):
        parts = draw(st.lists(sendgrid_parts(boundary), max_size=6))
        if draw(st.integers(0, 2)) == 0:      # a plausible sender so parsing goes further
            parts.insert(0, b'Content-Disposition: form-data; name="from"\r\n\r\n'
                         + b(draw(st.sampled_from(ADDRESSES))))
        used = boundary if kind == "form" else draw(st.sampled_from([boundary + "x", "", "-", "--"]))
        body = b"".join(b"--" + b(used) + b"\r\n" + part + b"\r\n" for part in parts)
        body += draw(st.sampled_from([b"--" + b(used) + b"--\r\n", b"--" + b(used) + b"--", b""]))
        if kind == "broken" and body:
            body = body[:draw(st.integers(0, len(body)))]
    elif kind == "raw_mime":
        body = draw(mime_messages)
        content_type = draw(st.sampled_from([content_type, "multipart/form-data",
                                             "multipart/form-data; boundary=",
                                             "message/rfc822", "multipart/mixed; boundary=x"]))
    else:
        body = draw(st.one_of(st.binary(max_size=300), mime_messages))
        content_type = draw(st.one_of(
            st.sampled_from(["application/x-www-form-urlencoded", "text/plain", "", "multipart/",
                             "MULTIPART/FORM-DATA; BOUNDARY=x", "multipart/form-data; boundary=\"\"",
                             "multipart/form-data; charset=utf-16; boundary=a"]),
            garbage_text.map(lambda t: HEADER_UNSAFE.sub("", t.encode("utf-8").decode("latin-1")))))
    signing = draw(st.sampled_from(["valid"] * 6 + ["none", "other_key", "garbage", "no_timestamp"]))
    return SendGridCase(content_type, body, signing)


def _sendgrid_form(*parts: bytes) -> SendGridCase:
    boundary = "corpusBoundary"
    body = b"".join(b"--corpusBoundary\r\n" + part + b"\r\n" for part in parts) + b"--corpusBoundary--\r\n"
    return SendGridCase(f"multipart/form-data; boundary={boundary}", body, "valid")


_FROM_PART = b'Content-Disposition: form-data; name="from"\r\n\r\n' + DEBTOR_EMAILS[0].encode()
# Inputs that once got a 500 (channels/sendgrid_inbound.py: a field's charset label).
SENDGRID_CORPUS = [
    _sendgrid_form(_FROM_PART, b'Content-Disposition: form-data; name="spam_score"\r\n'
                               b"Content-Type: text/plain; charset=idna\r\n\r\n\xff\xfe"),
    _sendgrid_form(_FROM_PART, b'Content-Disposition: form-data; name="dkim"\r\n'
                               b"Content-Type: text/plain; charset=\"\x00\"\r\n\r\nx"),
    _sendgrid_form(_FROM_PART, b'Content-Disposition: form-data; name="envelope"\r\n'
                               b"Content-Type: text/plain; charset=punycode\r\n\r\n\x80{"),
]


def sendgrid_headers(case: SendGridCase) -> dict[str, str]:
    headers = {"Content-Type": case.content_type}
    timestamp = "1795000000"
    if case.signing == "valid":
        signature = SG_KEY.sign(timestamp.encode() + case.body, ec.ECDSA(hashes.SHA256()))
    elif case.signing == "other_key":
        signature = SG_OTHER_KEY.sign(timestamp.encode() + case.body, ec.ECDSA(hashes.SHA256()))
    elif case.signing == "garbage":
        signature = case.body[:40] or b"x"
    else:
        signature = None
    if signature is not None:
        headers[SIGNATURE_HEADER] = base64.b64encode(signature).decode()
    if case.signing != "no_timestamp" and signature is not None:
        headers[TIMESTAMP_HEADER] = timestamp
    if case.signing == "no_timestamp":
        headers[SIGNATURE_HEADER] = base64.b64encode(
            SG_KEY.sign(case.body, ec.ECDSA(hashes.SHA256()))).decode()
    return headers


# --- payments --------------------------------------------------------------------------------
ids = st.one_of(st.sampled_from(DEBTOR_IDS + DEBTOR_REFERENCES + ["pay_1", "x" * 129, "../x", "", " D-EN-001"]),
                garbage_text)
amounts = st.one_of(
    st.sampled_from(["25.00", "0.01", "0", "-5", "1e3", "25,00", "NaN", "Infinity", "1" * 40,
                     "99999999999999999999999999.99", "0.001", " 7 ", "1e999999", "1E-999999999"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.integers(-10, 10 ** 30),
)
paid_ats = st.one_of(
    st.sampled_from(["2026-05-06T10:00:00Z", "2026-05-06", "2026-13-45", "2026-05-06T10:00:00",
                     "2026-05-06T10:00:00+99:00", "9999-12-31", "0001-01-01", "", "Z",
                     "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59"]),
    # any moment with any offset, the calendar's ends included
    st.builds(lambda moment, offset: moment.isoformat() + offset, st.datetimes(),
              st.sampled_from(["Z", "+00:00", "+23:59", "-23:59", "+01:00", "-12:00", ""])),
    garbage_text,
)
PAYMENT_FIELDS = {"payment_id": ids, "debtor_id": ids, "reference": ids, "amount": amounts,
                  "currency": st.one_of(st.sampled_from(["EUR", "GBP", "gbp", "XXX", "", "JPY", "BHD"]),
                                        garbage_text),
                  "paid_at": paid_ats, "method": st.one_of(garbage_text, st.just("card"))}


@st.composite
def payment_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["object"] * 5 + ["raw_number", "garbage", "deep", "truncated"]))
    if kind in ("object", "raw_number", "truncated"):
        payment = {"payment_id": "pay_" + draw(st.text(HEX, min_size=1, max_size=12)),
                   "debtor_id": draw(st.sampled_from(DEBTOR_IDS)), "amount": "25.00",
                   "currency": "GBP", "paid_at": "2026-05-06T10:00:00Z"}
        # a few fields changed, so that the others are valid and the parser goes deep
        for key in draw(st.lists(st.sampled_from(list(PAYMENT_FIELDS)), max_size=2, unique=True)):
            change = draw(st.integers(0, 5))
            if change == 0:
                payment.pop(key, None)
            elif change == 1:
                payment[key] = draw(json_garbage)
            else:
                payment[key] = draw(PAYMENT_FIELDS[key])
        for _ in range(draw(st.integers(0, 2))):
            payment[draw(garbage_text)] = draw(json_garbage)
        body = json.dumps(payment).encode()
        if kind == "raw_number":     # JSON numbers json.dumps cannot write
            number = draw(st.sampled_from(["1e999999", "-0", "1E+400", "25.001", "0.5e1", "1" * 5000,
                                           "1e-999999", "1e-999999999", "123456789012345678901234567890.5"]))
            body = json.dumps(dict(payment, amount="AMOUNT")).encode().replace(
                b'"AMOUNT"', number.encode())
        elif kind == "truncated":
            body = body[:draw(st.integers(0, len(body)))]
        return body
    if kind == "deep":
        depth = draw(st.integers(500, 100_000))
        opener = draw(st.sampled_from([b"[", b'{"a":']))
        return opener * depth
    return draw(st.one_of(st.binary(max_size=200), json_garbage.map(lambda v: json.dumps(v).encode()),
                          st.text(max_size=100).map(b)))


@dataclass
class PaymentCase:
    body: bytes
    signing: str


def _payment(**fields) -> bytes:
    body = {"payment_id": "pay_corpus", "debtor_id": "D-EN-001", "amount": "AMOUNT", "currency": "GBP",
            "paid_at": "2026-05-06T10:00:00Z"}
    amount = fields.pop("amount", '"25.00"')
    return json.dumps({**body, **fields}).encode().replace(b'"AMOUNT"', amount.encode())


# Inputs that once got a 500 or a wrong answer (service/payment_intake.py).
PAYMENT_CORPUS = [PaymentCase(body, "valid") for body in [
    b"[" * 50_000, b'{"a":' * 30_000,                      # RecursionError in json.loads
    _payment(amount="1e999999"),                           # decimal.Overflow
    _payment(amount="1E+5000"),                            # an int too long for Redis
    _payment(amount="1e-999999999"),                       # scaled to 0: a payment of nothing
    _payment(paid_at="9999-12-31T23:59:59-23:59"),         # OverflowError in astimezone
    _payment(paid_at="0001-01-01T00:00:00+23:59"),
]]


payment_cases = st.builds(
    PaymentCase, payment_bodies(),
    st.sampled_from(["valid"] * 6 + ["none", "other_secret", "stale", "garbage", "empty"]))


def payment_headers(case: PaymentCase) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if case.signing == "valid":
        headers[signatures.HEADER] = signatures.sign(PAYMENT_SECRET, case.body)
    elif case.signing == "other_secret":
        headers[signatures.HEADER] = signatures.sign("not-ours", case.body)
    elif case.signing == "stale":
        headers[signatures.HEADER] = signatures.sign(PAYMENT_SECRET, case.body, now=time.time() - 3600)
    elif case.signing == "garbage":
        headers[signatures.HEADER] = "t=1,v1=" + "z" * 64 + ",v1,=,t=x"
    elif case.signing == "empty":
        headers[signatures.HEADER] = ""
    return headers


# --- the gateway -----------------------------------------------------------------------------
@dataclass
class Gateway:
    client: object
    redis: aioredis.Redis
    smtp_port: int
    keys: Keys

    async def assert_alive(self) -> None:
        response = await self.client.get("/healthz")
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "ok"

    async def assert_twilio_accepts(self, path: str = "/twilio/sms") -> None:
        sid = "SM" + secrets.token_hex(16)
        params = dict(valid_sms(sid, DEBTOR_PHONES[0]))
        signature = RequestValidator(TOKEN).compute_signature(BASE + path, params)
        response = await self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status == 200, await response.text()
        assert sid.encode() in await self.redis.lrange(self.keys.pending("D-EN-001"), 0, -1)


@pytest_asyncio.fixture
async def gateway(aiohttp_client, redis_url):
    smtp_port = free_port()
    app_settings = Settings.from_env({
        "REDIS_URL": redis_url, "NUDGE_KEY_PREFIX": PREFIX, "NUDGE_PSEUDONYM_KEY": "f" * 32,
        "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": TOKEN, "NUDGE_WEBHOOK_BASE_URL": BASE,
        "NUDGE_SENDGRID_INBOUND_PUBLIC_KEY": SG_PUBLIC, "NUDGE_PAYMENT_WEBHOOK_SECRET": PAYMENT_SECRET,
        "NUDGE_SMTP_LISTEN_PORT": str(smtp_port), "NUDGE_SMTP_LISTEN_HOST": "127.0.0.1",
        "NUDGE_SIMULATOR": "0", "NUDGE_LOG_LEVEL": "ERROR"})
    redis = aioredis.from_url(redis_url)
    await import_file(DEMO, RedisDebtorStore(redis, Keys(PREFIX)))
    client = await aiohttp_client(create_app(app_settings))
    yield Gateway(client, redis, smtp_port, Keys(PREFIX))
    await redis.aclose()


def shown(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def report(problems: list[str]) -> str:
    return f"{len(problems)} bad answers; the first ones:\n" + "\n".join(problems[:5])


# --- 1. Twilio messages ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fuzzed_twilio_messages_never_get_a_5xx(gateway):
    cases = generate(twilio_cases(["/twilio/sms", "/twilio/whatsapp"], "message"), 1100, TWILIO_CORPUS)
    problems: list[str] = []
    reached = accepted = 0
    for case in cases:
        response = await gateway.client.post(
            URL(case.path, encoded=True), data=case.body, headers=twilio_headers(case))
        status, text = response.status, await response.text()
        form = server_form(case)
        expected: set[int]
        if status >= 500:
            expected = set()
        elif case.signing != "valid" or case.settings_header is not None:
            # 413 before the signature check only: aiohttp reads the form first
            expected = {403, 413} if len(case.body) > MAX_FORM or case.body.count(b"&") >= 999 else {403}
        elif form is None:
            expected = {200, 400, 403, 413}
        else:
            params = {key: form.getone(key) for key in form}
            if params.get("AccountSid") != ACCOUNT:
                expected = {403}
            else:
                reached += 1
                try:
                    parse_message(params)
                    expected = {200}
                except TwilioRequestError:
                    expected = {400}
        if status not in expected:
            problems.append(f"{status} {shown(text, 120)} for {shown(case)}")
        elif status == 400 and not text.strip():
            problems.append(f"400 without a reason for {shown(case)}")
        accepted += status == 200
    assert not problems, report(problems)
    assert reached > len(cases) * 0.3 and accepted > 150, (reached, accepted)   # the parser was reached
    await gateway.assert_alive()
    await gateway.assert_twilio_accepts("/twilio/sms")
    await gateway.assert_twilio_accepts("/twilio/whatsapp")


# --- 2. Twilio status callbacks -------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fuzzed_twilio_status_callbacks_never_get_a_5xx(gateway):
    for index, state in enumerate(["submitted", "sent", "delivered", "failed"], start=1):
        await gateway.redis.hset(gateway.keys.delivery(f"m{index}"), mapping={
            "message_id": f"m{index}", "state": state, "conversation_id": "D-EN-001", "channel": "sms"})
    cases = generate(twilio_cases(["/twilio/status"], "status"), 500)
    problems: list[str] = []
    reached = 0
    for case in cases:
        response = await gateway.client.post(
            URL(case.path, encoded=True), data=case.body, headers=twilio_headers(case))
        status, text = response.status, await response.text()
        form = server_form(case)
        if status >= 500:
            expected: set[int] = set()
        elif len(case.path) > 8000:
            expected = {400, 414}    # aiohttp's HTTP parser: request line too long
        elif case.signing != "valid" or case.settings_header is not None:
            expected = {403, 413}
        elif form is None:
            expected = {204, 400, 403, 413}
        else:
            params = {key: form.getone(key) for key in form}
            if params.get("AccountSid") != ACCOUNT:
                expected = {403}
            else:
                reached += 1
                try:
                    parse_status(params)
                    expected = {204}
                except TwilioRequestError:
                    expected = {400}
        if status not in expected:
            problems.append(f"{status} {shown(text, 120)} for {shown(case)}")
    assert not problems, report(problems)
    assert reached > len(cases) * 0.3, reached
    await gateway.assert_alive()
    # a well-formed callback still moves a delivery forward
    await gateway.redis.hset(gateway.keys.delivery("fresh"), mapping={
        "message_id": "fresh", "state": "sent", "conversation_id": "D-EN-001", "channel": "sms"})
    params = {"MessageSid": "SM" + "e" * 32, "AccountSid": ACCOUNT, "MessageStatus": "delivered",
              "To": "+447400123001"}
    signature = RequestValidator(TOKEN).compute_signature(BASE + "/twilio/status?m=fresh", params)
    response = await gateway.client.post("/twilio/status?m=fresh", data=params,
                                         headers={"X-Twilio-Signature": signature})
    assert response.status == 204
    assert await gateway.redis.hget(gateway.keys.delivery("fresh"), "state") == b"delivered"
    await gateway.assert_twilio_accepts()


# --- 3. SendGrid Inbound Parse --------------------------------------------------------------------
async def post_sendgrid(gateway: Gateway, case: SendGridCase):
    response = await gateway.client.post("/email/sendgrid", data=case.body, headers=sendgrid_headers(case))
    return response.status, await response.text()


@pytest.mark.asyncio
async def test_fuzzed_sendgrid_posts_never_get_a_5xx(gateway):
    cases = generate(sendgrid_cases(), 650, SENDGRID_CORPUS)
    problems: list[str] = []
    parsed = 0
    for case in cases:
        status, text = await post_sendgrid(gateway, case)
        expected = {200, 400} if case.signing == "valid" else {403}
        if status not in expected:
            problems.append(f"{status} {shown(text, 120)} for {shown(case, 600)}")
        parsed += status == 200
    assert not problems, report(problems)
    assert parsed > 50, parsed
    await gateway.assert_alive()
    # a well-formed, signed post is still accepted
    boundary = "wellFormed123"
    fields = {"from": DEBTOR_EMAILS[0], "to": "collections@nudge.example", "subject": "hello",
              "text": "Can I pay next week?",
              "headers": "Message-ID: <after-fuzz@debtor.example>\nSubject: hello\n"}
    body = b"".join(b(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
                    for name, value in fields.items()) + b(f"--{boundary}--\r\n")
    status, text = await post_sendgrid(gateway, SendGridCase(
        f"multipart/form-data; boundary={boundary}", body, "valid"))
    assert status == 200, text
    assert b"after-fuzz@debtor.example" in await gateway.redis.lrange(
        gateway.keys.pending("D-EN-001"), 0, -1)
    await gateway.assert_twilio_accepts()


# --- 4. the SMTP listener and its parser ------------------------------------------------------------
# Inputs that once broke the listener: "451 try again" for ever (channels/email_inbound.py).
MIME_CORPUS = [
    "From: Jörg <jörg@exämple.de>\r\nTo: reply+x@reply.nudge.example\r\nSubject: Zahlung\r\n"
    "Message-ID: <intl@example.de>\r\n\r\nIch zahle am Freitag.\r\n".encode(),   # RFC 6532 address
    b"From: caf\xe9 <x\xe9@b.example>\r\nTo: \xff@a.example\r\n\r\nhello\r\n",   # Latin-1 junk
]


def test_parse_mime_returns_a_message_or_its_own_error():
    """What the listener calls for each message: a ParsedEmail whose text is all Unicode, or
    EmailParseError."""
    problems: list[str] = []
    messages = generate(mime_messages, 900, MIME_CORPUS)
    for raw in messages:
        for envelope_from in (None, ""):
            try:
                result = parse_mime(raw, envelope_to=["reply+abc@" + REPLY_DOMAIN],
                                    envelope_from=envelope_from)
            except EmailParseError:
                continue
            except Exception as error:  # noqa: BLE001 - the very thing this test looks for
                problems.append(f"{type(error).__name__}: {shown(str(error), 100)} for {shown(raw, 600)}")
                continue
            if not isinstance(result, ParsedEmail) or not result.from_address or not result.message_id:
                problems.append(f"unexpected result {shown(result)} for {shown(raw, 600)}")
            elif unencodable(result):
                # a message Redis, the HMAC of an address or JSON cannot take is no message
                problems.append(f"text that is not Unicode {unencodable(result)} for {shown(raw, 600)}")
    assert not problems, report(problems)


def unencodable(value) -> list[str]:
    """The strings in a parse result that cannot be encoded as UTF-8 (lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [value]
        return []
    if isinstance(value, ParsedEmail):
        value = [getattr(value, name) for name in value.__dataclass_fields__]
    if isinstance(value, list | tuple):
        return [bad for item in value for bad in unencodable(item)]
    return []


SMTP_OK = 250
SMTP_REFUSED = {500, 550, 552, 554}      # unreadable (our 550 5.6.0), line or size limits


@pytest.mark.asyncio
async def test_fuzzed_mail_to_the_smtp_listener_is_never_answered_try_again(gateway):
    messages = generate(mime_messages, 250, MIME_CORPUS)
    problems: list[str] = []
    delivered = 0
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False,
                           use_tls=False, timeout=10)
    await smtp.connect()
    try:
        for raw in messages:
            if not smtp.is_connected:
                await smtp.connect()
            try:
                await smtp.sendmail(DEBTOR_EMAILS[0], ["reply+fuzz@" + REPLY_DOMAIN], raw)
                code, message = SMTP_OK, "OK"
            except aiosmtplib.SMTPResponseException as error:
                code, message = error.code, error.message
            except aiosmtplib.SMTPServerDisconnected as error:
                code, message = 0, f"disconnected: {error}"
            if code == SMTP_OK:
                delivered += 1
            elif code not in SMTP_REFUSED:
                problems.append(f"{code} {message} for {shown(raw, 600)}")
    finally:
        if smtp.is_connected:
            await smtp.quit()
    assert not problems, report(problems)
    assert delivered > 50, delivered
    await gateway.assert_alive()
    # a well-formed mail through the listener is still taken in
    raw = (f"From: {DEBTOR_EMAILS[0]}\r\nTo: collections@nudge.example\r\nSubject: hello\r\n"
           "Message-ID: <smtp-after-fuzz@debtor.example>\r\n\r\nI will pay on Friday.\r\n").encode()
    await aiosmtplib.send(raw, sender=DEBTOR_EMAILS[0], recipients=["reply+x@" + REPLY_DOMAIN],
                          hostname="127.0.0.1", port=gateway.smtp_port, start_tls=False, use_tls=False)
    assert b"smtp-after-fuzz@debtor.example" in await gateway.redis.lrange(
        gateway.keys.pending("D-EN-001"), 0, -1)
    await gateway.assert_twilio_accepts()


# --- 5. the payment webhook -------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fuzzed_payment_webhooks_never_get_a_5xx(gateway):
    cases = generate(payment_cases, 1000, PAYMENT_CORPUS)
    problems: list[str] = []
    recorded = 0
    for case in cases:
        response = await gateway.client.post("/payments/webhook", data=case.body,
                                             headers=payment_headers(case))
        status, text = response.status, await response.text()
        if case.signing == "valid":
            expected = {200, 400, 422, 413} if len(case.body) > MAX_FORM else {200, 400, 422}
        else:
            expected = {403, 413} if len(case.body) > MAX_FORM else {403}
        if status not in expected:
            problems.append(f"{status} {shown(text, 160)} for {shown(case, 400)}")
        recorded += status == 200
    assert not problems, report(problems)
    assert recorded > 30, recorded
    await gateway.assert_alive()
    body = json.dumps({"payment_id": "pay_after_fuzz", "debtor_id": "D-EN-001", "amount": "1.00",
                       "currency": "GBP", "paid_at": "2026-05-06T10:00:00Z"}).encode()
    response = await gateway.client.post("/payments/webhook", data=body, headers={
        "Content-Type": "application/json", signatures.HEADER: signatures.sign(PAYMENT_SECRET, body)})
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "recorded"
    await gateway.assert_twilio_accepts()
