"""WhatsApp's rules, pure: the customer-service window, approved templates outside it, and
the opt-in a message we start needs."""

from __future__ import annotations

import pytest

from channels.whatsapp_rules import plan_whatsapp

NOW = 1_800_000_000.0
HOUR = 3600.0
SIDS = {"reminder_first": {"en": "HX" + "0" * 32, "nl": "HX" + "1" * 32}}


def plan(kind="reply", template="balance", language="en", last=NOW - HOUR, opted_in=False):
    return plan_whatsapp(kind=kind, template=template, language=language, now=NOW,
                         last_inbound_at=last, opted_in=opted_in, session_hours=24,
                         content_sids=SIDS)


@pytest.mark.parametrize("last, mode", [
    (NOW - HOUR, "session"),
    (NOW - 23.99 * HOUR, "session"),
    (NOW - 24 * HOUR, "refuse"),          # the window is 24 hours, not a second more
    (None, "refuse"),                     # never wrote on WhatsApp
])
def test_a_reply_is_free_form_inside_the_window_only(last, mode):
    assert plan(last=last).mode == mode


def test_outside_the_window_an_approved_template_goes_in_the_debtors_language():
    result = plan(kind="reply", template="reminder_first", language="nl", last=None)
    assert (result.mode, result.content_sid) == ("template", "HX" + "1" * 32)
    assert plan(template="reminder_first", language="de", last=None).reason == "whatsapp_window_closed"


@pytest.mark.parametrize("kind", ["reminder", "campaign", "final_notice", "agent"])
def test_a_message_we_start_needs_a_recorded_opt_in(kind):
    assert plan(kind=kind).reason == "whatsapp_no_opt_in"
    assert plan(kind=kind, opted_in=True).mode == "session"
    assert plan(kind=kind, template="reminder_first", last=None, opted_in=True).mode == "template"


@pytest.mark.parametrize("kind", ["reply", "confirmation", "support", "opt_out_confirmation"])
def test_answers_to_the_debtor_need_no_opt_in(kind):
    assert plan(kind=kind).mode == "session"
