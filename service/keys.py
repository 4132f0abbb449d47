"""Every Redis key this project writes, in one place.

All keys start with a prefix (``nudge:`` by default) so one Redis can hold several
deployments or test runs side by side. The engine's own keys (tracker store, lock
store) use the prefixes configured in ``engine/endpoints.yml``; the job queue's keys
use arq's own ``arq:`` prefix under the queue name below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "nudge"

    # --- debtors and cases -------------------------------------------------------
    def debtor(self, debtor_id: str) -> str:
        """JSON document of one debtor and their case."""
        return f"{self.prefix}:debtor:{debtor_id}"

    @property
    def debtor_index(self) -> str:
        """Set of all debtor ids."""
        return f"{self.prefix}:debtors"

    @property
    def debtor_references(self) -> str:
        """Hash: creditor reference (upper case) -> debtor id."""
        return f"{self.prefix}:debtor_references"

    def debtor_by_address(self, channel_kind: str, address: str) -> str:
        """Debtor id for a phone number (E.164) or an email address."""
        return f"{self.prefix}:address:{channel_kind}:{address}"

    # --- conversations -------------------------------------------------------------
    def conversation(self, conversation_id: str) -> str:
        """Hash: owner (bot|agent), reason, agent, channel, language, timestamps."""
        return f"{self.prefix}:conv:{conversation_id}"

    def transcript(self, conversation_id: str) -> str:
        """Stream of inbound and outbound messages of one conversation."""
        return f"{self.prefix}:transcript:{conversation_id}"

    def pending(self, conversation_id: str) -> str:
        """List of inbound message ids waiting to be processed, in arrival order."""
        return f"{self.prefix}:pending:{conversation_id}"

    def conversation_lock(self, conversation_id: str) -> str:
        return f"{self.prefix}:lock:conv:{conversation_id}"

    def engine_outbox(self, conversation_id: str) -> str:
        """List of JSON event batches (an agent's turns, a hand-back) still to be written into
        the engine's tracker, oldest first (service/engine_outbox.py)."""
        return f"{self.prefix}:engine_outbox:{conversation_id}"

    @property
    def agent_queue(self) -> str:
        """Sorted set of conversations agents own (claimed or not), by priority then time."""
        return f"{self.prefix}:agent_queue"

    # --- messages ------------------------------------------------------------------
    def inbound(self, message_id: str) -> str:
        """Hash: one inbound message and its processing state."""
        return f"{self.prefix}:in:{message_id}"

    def outbound(self, message_id: str) -> str:
        """Marker that an outbound message id was handed to its transport (idempotency)."""
        return f"{self.prefix}:out:{message_id}"

    def reminder_told(self, message_id: str) -> str:
        """Present once the engine was told of this reminder (told once, however often retried)."""
        return f"{self.prefix}:reminder_told:{message_id}"

    @property
    def outbox(self) -> str:
        """Stream of every message handed to the outbox transport (the simulator reads it)."""
        return f"{self.prefix}:outbox"

    @property
    def events(self) -> str:
        """Stream of domain events (understood replies, handoffs, offers...)."""
        return f"{self.prefix}:events"

    def events_channel(self, conversation_id: str) -> str:
        """Pub/sub channel announcing new transcript entries of one conversation."""
        return f"{self.prefix}:live:{conversation_id}"

    # --- state the dialogue keeps --------------------------------------------------
    def arrangement(self, debtor_id: str) -> str:
        """Hash: the debtor's current arrangement, earlier ones, the negotiation in progress
        (service/arrangements.py)."""
        return f"{self.prefix}:arrangement:{debtor_id}"

    @property
    def arrangement_due(self) -> str:
        """Sorted set: debtor ids scored by the day their arrangement's next follow-up is due."""
        return f"{self.prefix}:arrangement_due"

    def verification(self, debtor_id: str) -> str:
        """Hash: identity checks of one debtor (attempts, lock, verified until), shared by the
        conversation and the payment page (service/identity.py)."""
        return f"{self.prefix}:verification:{debtor_id}"

    def promise(self, debtor_id: str) -> str:
        """Legacy (before arrangements kept promises): read by erasure and export only."""
        return f"{self.prefix}:promise:{debtor_id}"

    def suppression(self, channel: str, address_digest: str) -> str:
        """Present when an address opted out of a channel. The address is kept only as a keyed
        digest (service/suppression.py): an opt-out outlives the erasure of the debtor."""
        return f"{self.prefix}:suppressed:{channel}:{address_digest}"

    # --- contact rules (service/contact_rules.py) ----------------------------------
    def stop_states(self, debtor_id: str) -> str:
        """Hash: stop-state name -> JSON {reason, since, source, by}. Present = automation paused."""
        return f"{self.prefix}:stop:{debtor_id}"

    def contact_log(self, debtor_id: str, channel: str) -> str:
        """Sorted set of unsolicited messages sent on a channel: message id scored by send time
        (frequency caps count it; entries older than the longest cap window are trimmed)."""
        return f"{self.prefix}:contacts:{debtor_id}:{channel}"

    def preferences(self, debtor_id: str) -> str:
        """Hash of contact preferences the debtor stated (not_before, not_after, channels)."""
        return f"{self.prefix}:prefs:{debtor_id}"

    @property
    def deferred(self) -> str:
        """Sorted set: outbound message ids held by the contact rules, scored by when to retry."""
        return f"{self.prefix}:deferred"

    def deferred_message(self, message_id: str) -> str:
        """Hash: what a deferred message needs to be planned again (debtor, kind, template...)."""
        return f"{self.prefix}:deferred_msg:{message_id}"

    # --- data protection (service/privacy.py, service/audit.py) ----------------------
    @property
    def audit(self) -> str:
        """Append-only stream: every state change and every view of debtor data by a person."""
        return f"{self.prefix}:audit"

    def tombstone(self, pseudonym: str) -> str:
        """Restricted record kept after an erasure where a legal obligation keeps one."""
        return f"{self.prefix}:tombstone:{pseudonym}"

    # --- delivery to providers (service/delivery.py) --------------------------------
    def delivery(self, message_id: str) -> str:
        """Hash: one outbound message on its way to the provider: state, attempts, provider id,
        error code, what to send (body or WhatsApp content), where."""
        return f"{self.prefix}:delivery:{message_id}"

    @property
    def delivery_due(self) -> str:
        """Sorted set: outbound message ids not yet handed to their provider, by when to try."""
        return f"{self.prefix}:delivery_due"

    def delivery_lock(self, message_id: str) -> str:
        """Held while one worker talks to the provider about a message (no two at once)."""
        return f"{self.prefix}:lock:delivery:{message_id}"

    def pacing(self, sender: str) -> str:
        """The next free send slot (epoch seconds) of one sender (a number, service, mailbox)."""
        return f"{self.prefix}:pacing:{sender}"

    def email_thread(self, message_id_header: str) -> str:
        """The conversation and message an outbound email's Message-ID belongs to (threading)."""
        return f"{self.prefix}:email_thread:{message_id_header}"

    def reply_token(self, token: str) -> str:
        """The conversation a per-conversation reply address (reply+<token>@...) belongs to."""
        return f"{self.prefix}:reply_token:{token}"

    def invalid_address(self, address_digest: str) -> str:
        """Present when a provider said a number cannot receive messages (21211, 21614)."""
        return f"{self.prefix}:invalid_address:{address_digest}"

    def whatsapp_opt_in(self, debtor_id: str) -> str:
        """Hash: when and how a debtor opted in to business-initiated WhatsApp messages."""
        return f"{self.prefix}:wa_opt_in:{debtor_id}"

    @property
    def unknown_senders(self) -> str:
        """Set of conversations with senders we could not match to a debtor (for agents)."""
        return f"{self.prefix}:unknown_senders"

    # --- people ----------------------------------------------------------------------
    def user(self, username: str) -> str:
        """Hash: a console/CLI user's role and argon2id password hash."""
        return f"{self.prefix}:user:{username}"

    @property
    def user_index(self) -> str:
        """Set of every username (the console's user list)."""
        return f"{self.prefix}:users"

    # --- the web console (service/console/) ------------------------------------------
    def console_session(self, digest: str) -> str:
        """Hash: one console session (user, created, last_seen, csrf), keyed by a SHA-256 of
        the cookie's value so a copy of Redis holds no usable session. Expires when idle."""
        return f"{self.prefix}:console_session:{digest}"

    def console_sessions_of(self, username: str) -> str:
        """Set of the session digests of one user (server-side "log out everywhere")."""
        return f"{self.prefix}:console_sessions:{username}"

    def login_failures(self, kind: str, who: str) -> str:
        """Counter of failed logins for a username or a client address, expiring with the
        throttle window."""
        return f"{self.prefix}:login_failures:{kind}:{who}"

    # --- business events, creditor webhooks, payments (issue 4) -----------------------
    @property
    def business_events(self) -> str:
        """Append-only stream of business events (offers, arrangements, payments...), never
        trimmed: the record creditors are told from and exports are made of
        (service/business_events.py)."""
        return f"{self.prefix}:business_events"

    def business_event_id(self, event_id: str) -> str:
        """The stream entry id of an event appended with this event id (so a retried job does
        not append it twice). Kept as long as the stream keeps the event."""
        return f"{self.prefix}:business_event_id:{event_id}"

    @property
    def creditor_webhook_due(self) -> str:
        """Sorted set: business-event stream entry ids whose delivery to their creditor is
        scheduled or leased, by when to (re)try (service/creditor_webhooks.py)."""
        return f"{self.prefix}:creditor_webhook_due"

    def creditor_webhook_state(self, entry_id: str) -> str:
        """Hash: one event's delivery to its creditor: event id, type, creditor, attempts,
        next attempt, last error, delivered at. No bodies, no secrets."""
        return f"{self.prefix}:creditor_webhook:{entry_id}"

    def payment(self, payment_id: str) -> str:
        """Marker that a payment id was taken in (service/payment_intake.py): JSON with its
        state ("applying" with a short expiry, then "recorded" for good)."""
        return f"{self.prefix}:payment:{payment_id}"

    # --- segments, tones, outcomes, campaigns (issue 6) --------------------------------
    def touch(self, debtor_id: str) -> str:
        """Hash: the last campaign message a debtor received (segment, step, tone, channel,
        group, when, the success deadline) and their place in the workflow; outcomes are
        credited to it (service/tone_outcomes.py). Expires after the workflow goes quiet."""
        return f"{self.prefix}:touch:{debtor_id}"

    @property
    def touch_open(self) -> str:
        """Sorted set: debtor ids whose last campaign message has not yet succeeded or
        failed, by the end of its success window."""
        return f"{self.prefix}:touch_open"

    @property
    def tone_stats(self) -> str:
        """Hash, no personal data: ``<segment>|<tone>|s`` and ``|f`` (the bandit's Beta
        posterior counts) and ``<segment>|<step>|proof_n`` and ``|proof_s`` (social proof)."""
        return f"{self.prefix}:tone_stats"

    @property
    def outcome_counts(self) -> str:
        """Hash, no personal data: ``<segment>|<step>|<tone>|<channel>|<group>|<outcome>`` ->
        how many campaign messages had that outcome (each outcome once per message), plus
        ``resolved`` and ``success``."""
        return f"{self.prefix}:outcome_counts"

    @property
    def tone_log(self) -> str:
        """Stream, no personal data: every tone assignment with its probability, and its
        resolution (success or not) by assignment id, for unbiased analysis; allocation
        snapshots per segment over time."""
        return f"{self.prefix}:tone_log"

    @property
    def tone_pins(self) -> str:
        """Hash: segment -> the tone a manager pinned (the bandit is bypassed)."""
        return f"{self.prefix}:tone_pins"

    def campaign(self, campaign_id: str) -> str:
        """Hash: one campaign: segment, step, state, progress counters, planning cursor."""
        return f"{self.prefix}:campaign:{campaign_id}"

    @property
    def campaigns(self) -> str:
        """Sorted set: campaign ids by creation time."""
        return f"{self.prefix}:campaigns"

    @property
    def campaigns_unfinished(self) -> str:
        """Set: campaigns not yet done or cancelled (planning, running, paused)."""
        return f"{self.prefix}:campaigns_unfinished"

    def campaign_queue(self, campaign_id: str) -> str:
        """Sorted set: debtor ids planned in a campaign, by when their message may go (the
        contact window's opening, spaced by the campaign's pace)."""
        return f"{self.prefix}:campaign_queue:{campaign_id}"

    def campaign_pace(self, campaign_id: str) -> str:
        """Hash: channel -> the next free send slot of the campaign on that channel."""
        return f"{self.prefix}:campaign_pace:{campaign_id}"

    # --- template versions: the console's editor (service/template_versions.py) --------
    def template_versions(self, name: str) -> str:
        """Hash: version number -> JSON (text, author, note, created, status, based_on,
        warnings, decided_by, decided_at...) of one template file (``en/balance.j2``).
        Version 0, the file on disk, is not stored."""
        return f"{self.prefix}:template_versions:{name}"

    @property
    def template_overrides(self) -> str:
        """Hash: template file name -> the text of its live version, consulted before the
        files by every renderer (absent: the file is live)."""
        return f"{self.prefix}:template_overrides"

    @property
    def template_live(self) -> str:
        """Hash: template file name -> the number of its live version (absent: 0, the file)."""
        return f"{self.prefix}:template_live"

    @property
    def template_generation(self) -> str:
        """Counter: incremented with every change of the live versions; renderers reload
        ``template_overrides`` when it moved."""
        return f"{self.prefix}:template_generation"

    @property
    def template_pending(self) -> str:
        """Set: template file names with a version waiting for approval."""
        return f"{self.prefix}:template_pending"
