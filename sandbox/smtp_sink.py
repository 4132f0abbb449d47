"""A local SMTP server that catches every email: the mail catcher of a local run and the
relay the email tests send to for real.

Each message it accepts is kept in memory (``messages``, parsed with ``policy.default``) and,
when a directory is given, written there as one ``.eml`` file. Refusals can be scripted
(``fail_next``, ``fail_permanently_for``), STARTTLS offered with a certificate made at run time
(``self_signed_context``) and AUTH (PLAIN, LOGIN) required.

    python -m sandbox.smtp_sink --port 2525 --dir .run/mail

It only ever listens on the loopback interface: it is a sink, not a relay.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import re
import signal
import ssl
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
_EML_NUMBER = re.compile(r"^(\d+)-")


class _QuietDeprecation(logging.Filter):
    """aiosmtpd 1.4 warns about its own use of Session.login_data on every successful AUTH;
    one line per message drowns out what the sink's log is for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Session.login_data is deprecated")


_QUIET = _QuietDeprecation()


@dataclass(frozen=True)
class Delivery:
    """One accepted message with its envelope (who the relay was told it is from and for)."""
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool
    authenticated_as: str | None
    peer: tuple[str, int]            # the client's address: one port, one connection
    path: Path | None


class SmtpSink:
    """``SmtpSink(directory, port=0)``; ``start()``, send, read ``messages``, ``stop()``.

    Port 0 takes a free port; ``port`` tells which after ``start()``. With ``require_auth``,
    MAIL is refused until the client authenticates with that user name and password — over
    TLS only when a ``starttls_context`` is given, as a real submission server would insist.
    """

    def __init__(self, directory: Path | None, port: int = 0,
                 require_auth: tuple[str, str] | None = None,
                 starttls_context: ssl.SSLContext | None = None, *,
                 auth_exclude: Iterable[str] = ()):
        self.directory = directory
        self._requested_port = port
        self._require_auth = require_auth
        self._starttls_context = starttls_context
        self._auth_exclude = tuple(auth_exclude)
        self._lock = threading.Lock()  # the server runs in the controller's thread
        self._deliveries: list[Delivery] = []
        self._failures: list[tuple[int, str]] = []
        self._refused: dict[str, int] = {}
        self._auth_mechanisms: list[str] = []
        self._number = _last_number(directory)
        self._controller: _Controller | None = None

    # --- lifecycle ---

    def start(self) -> None:
        logging.getLogger("mail.log").addFilter(_QUIET)  # added once, however many sinks
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        smtp_options: dict[str, Any] = {"server_hostname": "sink.nudge.invalid"}
        if self._starttls_context is not None:
            smtp_options["tls_context"] = self._starttls_context
        if self._require_auth is not None:
            smtp_options.update(auth_required=True, authenticator=self._authenticate,
                                auth_require_tls=self._starttls_context is not None,
                                auth_exclude_mechanism=self._auth_exclude)
        controller = _Controller(_Handler(self), hostname=HOST, port=self._requested_port,
                                 **smtp_options)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("the sink is not running")
        return self._controller.port

    # --- what arrived ---

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    @property
    def messages(self) -> list[EmailMessage]:
        return [delivery.message for delivery in self.deliveries]

    @property
    def auth_mechanisms(self) -> list[str]:
        """The AUTH mechanism of every successful login, in order."""
        with self._lock:
            return list(self._auth_mechanisms)

    # --- scripted refusals ---

    def fail_next(self, n: int, code: int = 451) -> None:
        """Refuse the next ``n`` messages at the end of DATA with ``code``."""
        with self._lock:
            self._failures.extend([(code, _reply_text(code))] * n)

    def fail_permanently_for(self, address: str, code: int = 550) -> None:
        """Refuse this recipient at RCPT, every time."""
        with self._lock:
            self._refused[address.lower()] = code

    # --- called by the handler, in the server's thread ---

    def _refusal_for(self, address: str) -> str | None:
        with self._lock:
            code = self._refused.get(address.lower())
        return None if code is None else f"{code} {_reply_text(code)}"

    def _next_failure(self) -> str | None:
        with self._lock:
            if not self._failures:
                return None
            code, text = self._failures.pop(0)
        return f"{code} {text}"

    def _accept(self, envelope: Envelope, session: Session, tls: bool) -> str:
        raw = envelope.original_content or b""
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        with self._lock:
            self._number += 1
            number = self._number
            path = self._write(number, message, raw)
            user = session.auth_data.login.decode() if session.authenticated else None
            self._deliveries.append(Delivery(
                mail_from=envelope.mail_from or "", rcpt_tos=tuple(envelope.rcpt_tos),
                message=message, tls=tls, authenticated_as=user,
                peer=tuple(session.peer or ("", 0)), path=path))
        return f"250 OK queued as {number:06d}"

    def _write(self, number: int, message: EmailMessage, raw: bytes) -> Path | None:
        if self.directory is None:
            return None
        key = str(message.get("Message-ID", "")) or str(number)
        name = f"{number:06d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.eml"
        # Written then renamed, so whoever watches the directory never reads half a message.
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(raw)
        return partial.rename(self.directory / name)

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        assert self._require_auth is not None
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self._require_auth
        ok = (hmac.compare_digest(auth_data.login, user.encode())
              and hmac.compare_digest(auth_data.password, password.encode()))
        if ok:
            with self._lock:
                self._auth_mechanisms.append(mechanism)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


class _Handler:
    """aiosmtpd's hooks; every decision is the sink's."""

    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        refusal = self.sink._refusal_for(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.sink._next_failure()
        if refusal is not None:
            return refusal
        tls = server.transport is not None and server.transport.get_extra_info("sslcontext") is not None
        return self.sink._accept(envelope, session, tls)


class _Controller(Controller):
    """aiosmtpd's Controller, which can also listen on port 0 (a free port)."""

    def _trigger_server(self) -> None:
        # Called once the server is bound; the readiness probe needs the real port.
        if self.port == 0 and self.server is not None:
            self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _reply_text(code: int) -> str:
    if code == 550:
        return "5.1.1 Mailbox unavailable"
    if 500 <= code < 600:
        return "5.0.0 Refused by the sink"
    return "4.3.0 Try again later"


def _last_number(directory: Path | None) -> int:
    """The highest message number already in the directory: a restarted sink continues
    after it instead of overwriting earlier messages."""
    if directory is None or not directory.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in directory.glob("*.eml")
               if (m := _EML_NUMBER.match(p.name))]
    return max(numbers, default=0)


# --- a certificate for STARTTLS -------------------------------------------------------------


def self_signed_certificate(hostname: str = "localhost") -> tuple[bytes, bytes]:
    """A PEM certificate and key for ``hostname`` and 127.0.0.1, valid for a day.

    A client trusts it with ``ssl.create_default_context(cadata=certificate.decode())``.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_context(certificate: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
    """A server-side TLS context; a fresh self-signed certificate unless one is given."""
    cert_pem, key_pem = certificate or self_signed_certificate()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # load_cert_chain reads files only; the key lives on disk for as long as this call.
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


# --- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.smtp_sink",
                                     description="Catch every email in a directory.")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--dir", type=Path, required=True, help="where .eml files go")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with SmtpSink(args.dir, port=args.port) as sink:
        print(f"smtp sink on {HOST}:{sink.port}, writing to {args.dir}", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
