"""policies/channels.yml: senders, pacing, WhatsApp's approved templates and buttons, email
addresses, fallback order and retry timing, validated at start-up.

Every mistake is reported with the file, the key and what was expected, all at once, so an
operator fixes the file in one go rather than one error per restart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.config_files import read_yaml
from bot.core.debtors import LANGUAGES
from channels.base import CHANNELS

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CONTENT_SID = re.compile(r"^HX[0-9a-f]{32}$")
_SERVICE_SID = re.compile(r"^MG[0-9a-f]{32}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")


class ChannelConfigError(ValueError):
    """policies/channels.yml is wrong; the message names every problem."""


@dataclass(frozen=True)
class Sender:
    """Who a Twilio channel sends as: a Messaging Service or a from-number."""
    messaging_service_sid: str | None
    from_number: str | None
    pacing_per_second: float

    @property
    def pacing_key(self) -> str:
        return self.messaging_service_sid or self.from_number or "none"


@dataclass(frozen=True)
class ContentTemplate:
    sids: dict[str, str]                 # language -> Content SID
    variables: dict[str, str]            # placeholder number -> Jinja expression
    buttons: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmailConfig:
    from_address: str
    from_name: str
    reply_domain: str
    transport: str                       # smtp | sendgrid
    pacing_per_second: float
    max_inbound_bytes: int


@dataclass(frozen=True)
class RetryConfig:
    first_delay_seconds: float = 2.0
    max_delay_seconds: float = 600.0
    provider_timeout_seconds: float = 15.0

    def delay(self, attempt: int) -> float:
        """Back-off before attempt `attempt + 1` (attempt counts from 1): doubling, capped."""
        return min(self.max_delay_seconds, self.first_delay_seconds * 2 ** max(0, attempt - 1))


@dataclass(frozen=True)
class ChannelConfig:
    sms: Sender
    whatsapp: Sender
    session_hours: float
    content_templates: dict[str, ContentTemplate]
    buttons: dict[str, str]              # payload -> intent
    replace_smart_characters: bool
    email: EmailConfig
    fallback_order: tuple[str, ...]
    retry: RetryConfig = field(default_factory=RetryConfig)

    def sender(self, channel: str) -> Sender:
        return self.whatsapp if channel == "whatsapp" else self.sms

    def pacing(self, channel: str) -> tuple[str, float]:
        """(pacing key, messages per second) of the sender a channel's messages go through."""
        if channel == "email":
            return f"email:{self.email.from_address}", self.email.pacing_per_second
        sender = self.sender(channel)
        return f"{channel}:{sender.pacing_key}", sender.pacing_per_second

    @classmethod
    def load(cls, directory: Path) -> ChannelConfig:
        path = Path(directory) / "channels.yml"
        return parse_channel_config(read_yaml(path, ChannelConfigError) or {}, source=str(path))


def parse_channel_config(raw: Any, source: str = "channels.yml") -> ChannelConfig:
    problems: list[str] = []

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name) if isinstance(raw, dict) else None
        if not isinstance(value, dict):
            problems.append(f"{name}: expected a mapping")
            return {}
        return value

    def number(where: str, value: Any, default: float, low: float = 0.0) -> float:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
            problems.append(f"{where}: expected a number of at least {low:g}, got {value!r}")
            return default
        return float(value)

    def sender(name: str, data: dict[str, Any]) -> Sender:
        service, from_number = data.get("messaging_service_sid"), data.get("from_number")
        if service is not None and not (isinstance(service, str) and _SERVICE_SID.match(service)):
            problems.append(f"{name}.messaging_service_sid: expected MG followed by 32 hex digits")
            service = None
        if from_number is not None:
            bare = from_number.removeprefix("whatsapp:") if isinstance(from_number, str) else ""
            if not _E164.match(bare) or (name == "whatsapp") != from_number.startswith("whatsapp:"):
                expected = "whatsapp:+<E.164>" if name == "whatsapp" else "an E.164 number (+...)"
                problems.append(f"{name}.from_number: expected {expected}, got {from_number!r}")
                from_number = None
        if service is None and from_number is None:
            problems.append(f"{name}: set messaging_service_sid or from_number")
        return Sender(service, from_number, number(f"{name}.pacing_per_second",
                                                   data.get("pacing_per_second"), 10.0))

    sms_raw, wa_raw, email_raw = section("sms"), section("whatsapp"), section("email")
    sms, whatsapp = sender("sms", sms_raw), sender("whatsapp", wa_raw)

    templates: dict[str, ContentTemplate] = {}
    for key, spec in (wa_raw.get("content_templates") or {}).items():
        where = f"whatsapp.content_templates.{key}"
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected a mapping with sids and variables")
            continue
        sids = spec.get("sids") or {}
        bad = [f"{lang}={sid!r}" for lang, sid in sids.items()
               if lang not in LANGUAGES or not (isinstance(sid, str) and _CONTENT_SID.match(sid))]
        if not sids or bad:
            problems.append(f"{where}.sids: expected language (en, nl, de) -> HX + 32 hex digits"
                            + (f"; wrong: {', '.join(bad)}" if bad else ""))
        variables = spec.get("variables") or {}
        if not isinstance(variables, dict) or not all(
                str(k).isdigit() and isinstance(v, str) for k, v in variables.items()):
            problems.append(f"{where}.variables: expected placeholder number -> expression")
            variables = {}
        buttons = tuple(spec.get("buttons") or ())
        templates[key] = ContentTemplate(dict(sids), {str(k): v for k, v in variables.items()},
                                         buttons)

    buttons = wa_raw.get("buttons") or {}
    if not isinstance(buttons, dict) or not all(isinstance(v, str) for v in buttons.values()):
        problems.append("whatsapp.buttons: expected payload -> intent")
        buttons = {}
    for key, spec in templates.items():
        unknown = [b for b in spec.buttons if b not in buttons]
        if unknown:
            problems.append(f"whatsapp.content_templates.{key}.buttons: {', '.join(unknown)} "
                            "not in whatsapp.buttons")

    email_fields = {}
    for name, pattern, what in (("from_address", _EMAIL, "an email address"),
                                ("reply_domain", _DOMAIN, "a lower-case domain name")):
        value = email_raw.get(name)
        if not (isinstance(value, str) and pattern.match(value)):
            problems.append(f"email.{name}: expected {what}, got {value!r}")
        email_fields[name] = value if isinstance(value, str) else ""
    transport = email_raw.get("transport", "smtp")
    if transport not in ("smtp", "sendgrid"):
        problems.append(f"email.transport: expected smtp or sendgrid, got {transport!r}")
    email = EmailConfig(email_fields["from_address"], str(email_raw.get("from_name") or ""),
                        email_fields["reply_domain"], transport,
                        number("email.pacing_per_second", email_raw.get("pacing_per_second"), 20.0),
                        int(number("email.max_inbound_bytes", email_raw.get("max_inbound_bytes"),
                                   10 * 1024 * 1024, low=1024)))

    order = tuple(raw.get("fallback_order") or CHANNELS) if isinstance(raw, dict) else CHANNELS
    if sorted(order) != sorted(set(order)) or not set(order) <= set(CHANNELS):
        problems.append(f"fallback_order: expected channels from {list(CHANNELS)} without repeats")
    retry_raw = (raw.get("retry") if isinstance(raw, dict) else None) or {}
    retry = RetryConfig(number("retry.first_delay_seconds", retry_raw.get("first_delay_seconds"), 2.0),
                        number("retry.max_delay_seconds", retry_raw.get("max_delay_seconds"), 600.0),
                        number("retry.provider_timeout_seconds",
                               retry_raw.get("provider_timeout_seconds"), 15.0, low=1.0))
    session_hours = number("whatsapp.session_hours", wa_raw.get("session_hours"), 24.0, low=1.0)
    smart = sms_raw.get("replace_smart_characters", True)
    if not isinstance(smart, bool):
        problems.append("sms.replace_smart_characters: expected true or false")
    if problems:
        raise ChannelConfigError(f"{source}: " + "; ".join(problems))
    return ChannelConfig(sms, whatsapp, session_hours, templates, dict(buttons), bool(smart),
                         email, order, retry)
