"""The two shapes every channel speaks: one InboundMessage in, one OutboundMessage out.

Channel modules parse a provider's request into an InboundMessage and send an
OutboundMessage; they never import the dialogue (house style 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ChannelName = Literal["sms", "whatsapp", "email"]
CHANNELS: tuple[str, ...] = ("sms", "whatsapp", "email")


@dataclass(frozen=True)
class InboundMessage:
    message_id: str          # the provider's id (MessageSid, Message-ID); duplicates share it
    channel: str             # sms | whatsapp | email
    address: str             # who wrote: E.164 phone or email address
    body: str
    received_at: float
    to: str = ""
    media_urls: tuple[str, ...] = ()
    profile_name: str | None = None
    provider: str = "simulator"
    button_payload: str | None = None   # WhatsApp quick reply: its payload, mapped to an intent
    subject: str | None = None          # email: the subject, for "Re:" on our answer
    references: tuple[str, ...] = ()    # email: Message-IDs of the thread, newest last

    def address_kind(self) -> str:
        return "email" if self.channel == "email" else "phone"


@dataclass(frozen=True)
class OutboundMessage:
    message_id: str          # idempotency key: the same id is never handed over twice
    conversation_id: str
    channel: str
    address: str
    body: str
    template: str
    language: str
    subject: str | None = None
    tone: str = "soft"
    extra: dict = field(default_factory=dict)
