"""What a failed delivery means, and what Nudge does about it (run by the worker).

| provider error                                | meaning                     | action                            |
|-----------------------------------------------|-----------------------------|-----------------------------------|
| Twilio 21610                                  | the person replied STOP to  | opt-out recorded for the channel  |
|                                               | our number at the carrier   | and address; no fallback (they    |
|                                               |                             | said stop; other channels keep    |
|                                               |                             | their own consent)                |
| Twilio 21211, 21614                           | invalid number / not mobile | the number is flagged for that    |
|                                               |                             | channel; next channel             |
| Twilio 30003-30008                            | undelivered by the carrier  | next channel                      |
| Twilio 63016                                  | WhatsApp window closed      | the approved template, else next  |
|                                               |                             | channel                           |
| email bounce                                  | mailbox does not take it    | next channel                      |
| anything else                                 | logged in the transcript    | none                              |

"Next channel" is the configured fallback order (policies/channels.yml), through the contact
rules again (service/sending.py: ``Sender.fall_back``). Running this twice for one message
does nothing new: the fallback's message id derives from the failed one, and the outbox sends
an id once.
"""

from __future__ import annotations

from service.audit import AuditLog
from service.conversations import ConversationStore
from service.delivery import DeliveryStore
from service.logs import get_logger
from service.sending import PlannedMessage, Sender
from service.suppression import SuppressionStore

log = get_logger("delivery")

UNDELIVERED_CODES = {str(code) for code in range(30003, 30009)}
INVALID_NUMBER_CODES = {"21211", "21614"}
UNSUBSCRIBED_CODE = "21610"
WHATSAPP_WINDOW_CODE = "63016"


class FailureHandler:
    def __init__(self, store: DeliveryStore, sender: Sender, suppressions: SuppressionStore,
                 conversations: ConversationStore, audit: AuditLog):
        self.store = store
        self.sender = sender
        self.suppressions = suppressions
        self.conversations = conversations
        self.audit = audit

    async def handle(self, message_id: str) -> str:
        """Act on one failed or undelivered message. Returns the action taken."""
        record = await self.store.get(message_id)
        if not record or record.get("state") not in ("failed", "undelivered"):
            return "none"
        code = record.get("error_code") or ""
        plan = PlannedMessage.from_json(record["plan"]) if record.get("plan") else None
        conversation_id = record.get("conversation_id", "")
        channel, address = record["channel"], record["address"]

        if code == UNSUBSCRIBED_CODE:
            await self.suppressions.suppress(channel, address, "twilio_21610")
            if conversation_id:
                await self.conversations.add_event(conversation_id, "opted_out", {
                    "channel": channel, "via": "carrier (Twilio 21610)"})
            if plan and plan.debtor_id:
                await self.audit.record("provider", "opt_out", debtor_id=plan.debtor_id,
                                        channel=channel, via="twilio_21610")
            return "opted_out"
        if plan is None:
            return "none"
        if code in INVALID_NUMBER_CODES:
            assert self.sender.channel_rules is not None
            await self.sender.channel_rules.flag_invalid(channel, address, code)
            await self.conversations.add_event(conversation_id, "invalid_number", {
                "channel": channel, "error_code": code})
            return await self._fall_back(plan, f"invalid_number:{code}")
        if code == WHATSAPP_WINDOW_CODE and channel == "whatsapp":
            # Meta's clock wins over ours: the window is closed. Planned again, the message
            # goes as the approved template if it has one, else to the next channel.
            await self.sender.redis.hdel(self.sender.keys.conversation(conversation_id),
                                         "last_inbound_whatsapp")
            base_id = plan.message_id.split("~", 1)[0]
            if plan.message_id.endswith("~template"):
                return await self._fall_back(plan, "whatsapp_window_closed")
            retry = PlannedMessage(**{**plan.__dict__, "message_id": f"{base_id}~template"})
            decision = await self.sender.send(retry)
            return f"whatsapp_template:{decision.verdict}"
        if code in UNDELIVERED_CODES or code == "bounce":
            return await self._fall_back(plan, f"undelivered:{code}")
        log.info("delivery_failure_unhandled", message_id=message_id, code=code)
        return "none"

    async def _fall_back(self, plan: PlannedMessage, reason: str) -> str:
        decision = await self.sender.fall_back(plan, reason)
        return f"fallback:{decision.verdict}" if decision else "no_channel_left"
