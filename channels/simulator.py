"""The simulator channel: the web page and `nudge chat` post here as a debtor would.

It has the same shape as a provider channel: parse a request into one InboundMessage. It
trusts no field it does not need: the debtor is chosen by id and the address is looked up,
so the simulator cannot write as an address that is not in the portfolio.
"""

from __future__ import annotations

import time
import uuid
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
