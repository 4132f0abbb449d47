"""WhatsApp's own rules, on top of the contact rules every channel obeys (pure; no I/O).

* Free-form messages only inside the customer-service window: 24 hours (configurable) after
  the debtor last wrote to us on WhatsApp.
* Outside it, only a template Meta approved (Twilio: ContentSid + ContentVariables).
* A message we start (a reminder, a campaign step, a final notice, an agent writing first)
  needs the debtor's recorded WhatsApp opt-in. A reply inside the window does not: the debtor
  wrote first.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.contact_policy import UNSOLICITED_KINDS


@dataclass(frozen=True)
class WhatsAppPlan:
    mode: str                    # session (free-form body) | template (ContentSid) | refuse
    reason: str = ""
    content_sid: str | None = None


def plan_whatsapp(*, kind: str, template: str, language: str, now: float,
                  last_inbound_at: float | None, opted_in: bool, session_hours: float,
                  content_sids: dict[str, dict[str, str]]) -> WhatsAppPlan:
    """How a message may go on WhatsApp. `content_sids`: template key -> language -> SID."""
    if kind in UNSOLICITED_KINDS and not opted_in:
        return WhatsAppPlan("refuse", "whatsapp_no_opt_in")
    if in_session(last_inbound_at, now, session_hours):
        return WhatsAppPlan("session")
    sid = (content_sids.get(template) or {}).get(language)
    if sid:
        return WhatsAppPlan("template", content_sid=sid)
    return WhatsAppPlan("refuse", "whatsapp_window_closed")


def in_session(last_inbound_at: float | None, now: float, session_hours: float) -> bool:
    return last_inbound_at is not None and now - last_inbound_at < session_hours * 3600
