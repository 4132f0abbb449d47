"""The simulator channel: the web page and `nudge chat` post here as a debtor would.

It has the same shape as a provider channel: parse a request into one InboundMessage. It
trusts no field it does not need: the debtor is chosen by id and the address is looked up,
so the simulator cannot write as an address that is not in the portfolio.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import time
import uuid
from email.message import EmailMessage
from typing import Any

from channels.base import CHANNELS, InboundMessage

MAX_BODY = 1600  # Twilio's longest body; the simulator keeps to what a provider would send


class SimulatorRequestError(ValueError):
    pass


def parse(payload: Any, address: str) -> InboundMessage:
    if not isinstance(payload, dict):
        raise SimulatorRequestError("the body must be a JSON object")
    channel = payload.get("channel")
    if channel not in CHANNELS:
        raise SimulatorRequestError(f"channel must be one of {', '.join(CHANNELS)}")
    body = payload.get("body")
    if not isinstance(body, str) or not body.strip():
        raise SimulatorRequestError("body must be a non-empty string")
    if len(body) > MAX_BODY:
        raise SimulatorRequestError(f"body is longer than {MAX_BODY} characters")
    message_id = payload.get("message_id") or f"SIM{uuid.uuid4().hex}"
    if not isinstance(message_id, str) or len(message_id) > 100:
        raise SimulatorRequestError("message_id must be a short string")
    return InboundMessage(message_id=message_id, channel=channel, address=address,
                          body=body.strip(), received_at=time.time(), provider="simulator")


# --- the simulator speaks the providers' own formats -----------------------------------
# So a newcomer exercises the real path: the gateway's simulator API turns a debtor's typed
# message into the very request Twilio or a mail server would make, signed, and sends it to
# the real endpoint.

def message_sid_for(message_id: str) -> str:
    """A Twilio-shaped MessageSid: the id itself if it is one, else one derived from it (so
    re-posting the same simulator id is the same Twilio message, a duplicate)."""
    if re.fullmatch(r"SM[0-9a-f]{32}", message_id):
        return message_id
    return "SM" + hashlib.sha256(message_id.encode()).hexdigest()[:32]


def twilio_params(*, message: InboundMessage, account_sid: str, to: str,
                  profile_name: str | None = None) -> dict[str, str]:
    """The form Twilio posts for an inbound SMS or WhatsApp message."""
    prefix = "whatsapp:" if message.channel == "whatsapp" else ""
    params = {"MessageSid": message_sid_for(message.message_id), "AccountSid": account_sid,
              "From": prefix + message.address, "To": prefix + to.removeprefix("whatsapp:"),
              "Body": message.body,
              "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01"}
    params["SmsSid"] = params["SmsMessageSid"] = params["MessageSid"]
    if prefix:
        params["WaId"] = message.address.lstrip("+")
        if profile_name:
            params["ProfileName"] = profile_name
    return params


def email_mime(*, message: InboundMessage, to: str, subject: str,
               in_reply_to: str | None) -> bytes:
    """A debtor's email as their mail client would send it."""
    mail = EmailMessage()
    mail["From"] = message.address
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = email.utils.formatdate(message.received_at)
    mail["Message-ID"] = f"<{hashlib.sha256(message.message_id.encode()).hexdigest()[:24]}" \
                         "@simulator.nudge.example>"
    if in_reply_to:
        mail["In-Reply-To"] = mail["References"] = f"<{in_reply_to.strip('<>')}>"
    mail.set_content(message.body)
    return mail.as_bytes()
