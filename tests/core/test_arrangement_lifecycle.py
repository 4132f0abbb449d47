"""The arrangement lifecycle: payments allocated, follow-ups each sent once, broken after grace."""

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.arrangement_lifecycle import (
    TransitionError, accept, apply_payment, follow_ups, new_arrangement, next_follow_up_date,
)

D1, D2, D3 = date(2026, 12, 1), date(2027, 1, 1), date(2027, 2, 1)


def plan(state="accepted", grace=5):
    return new_arrangement("A1", "D-1", "plan", "EUR", 30000, [10000, 10000, 10000], [D1, D2, D3],
                           date(2026, 11, 20), frequency="monthly", grace_days=grace, state=state)


def test_proposed_then_accepted_then_active_then_completed():
    arr = plan(state="proposed")
    with pytest.raises(TransitionError):
        accept(accept(arr, date(2026, 11, 20)), date(2026, 11, 20))
    arr = accept(arr, date(2026, 11, 20))
    assert arr.state == "accepted"
    first = apply_payment(arr, "p1", 10000, D1)
    assert first.arrangement.state == "active"
    assert [e for e, _ in first.events] == ["instalment_paid", "arrangement_active"]
    done = apply_payment(first.arrangement, "p2", 20000, D2)
    assert done.arrangement.state == "completed"
    assert [e for e, _ in done.events] == ["instalment_paid", "instalment_paid", "arrangement_completed"]


def test_partial_payments_fill_the_earliest_instalment_and_carry_over():
    arr = plan()
    effect = apply_payment(arr, "p1", 4000, D1)
    assert [i.paid_minor for i in effect.arrangement.instalments] == [4000, 0, 0]
    assert effect.arrangement.instalments[0].state(D1) == "partial"
    effect = apply_payment(effect.arrangement, "p2", 13000, D1)
    assert [i.paid_minor for i in effect.arrangement.instalments] == [10000, 7000, 0]


def test_a_payment_counts_once_and_an_overpayment_is_reported():
    arr = plan()
    once = apply_payment(arr, "p1", 10000, D1).arrangement
    assert apply_payment(once, "p1", 10000, D1).arrangement == once
    effect = apply_payment(once, "p2", 25000, D1)
    assert effect.arrangement.state == "completed" and effect.unallocated_minor == 5000


def test_reminder_the_day_before_then_missed_then_broken_each_once():
    arr = plan(grace=5)
    assert next_follow_up_date(arr) == date(2026, 11, 30)
    arr, todo, _ = follow_ups(arr, date(2026, 11, 29))
    assert todo == []
    arr, todo, _ = follow_ups(arr, date(2026, 11, 30))
    assert [(t.kind, t.number) for t in todo] == [("instalment_reminder", 1)]
    arr, todo, _ = follow_ups(arr, date(2026, 11, 30))
    assert todo == []
    assert next_follow_up_date(arr) == date(2026, 12, 2)
    arr, todo, events = follow_ups(arr, date(2026, 12, 2))
    assert [t.kind for t in todo] == ["instalment_missed"] and events[0][0] == "instalment_missed"
    assert next_follow_up_date(arr) == date(2026, 12, 7)
    arr, todo, _ = follow_ups(arr, date(2026, 12, 6))
    assert todo == [] and arr.state == "accepted"
    arr, todo, events = follow_ups(arr, date(2026, 12, 7))
    assert arr.state == "broken" and [t.kind for t in todo] == ["arrangement_broken"]
    assert events[-1][0] == "arrangement_broken"
    assert follow_ups(arr, date(2026, 12, 8))[1] == [] and next_follow_up_date(arr) is None


def test_paid_within_grace_is_not_broken():
    arr = plan(grace=5)
    arr, _, _ = follow_ups(arr, date(2026, 12, 2))
    arr = apply_payment(arr, "late", 10000, date(2026, 12, 4)).arrangement
    arr, todo, _ = follow_ups(arr, date(2026, 12, 10))
    assert arr.state == "active" and todo == []


def test_promise_reminder_kept_and_broken():
    promise = new_arrangement("P1", "D-1", "promise", "GBP", 5000, [5000], [D1], date(2026, 11, 20),
                              grace_days=2, state="accepted")
    arr, todo, _ = follow_ups(promise, date(2026, 11, 30))
    assert [t.kind for t in todo] == ["promise_reminder"]
    kept = apply_payment(arr, "p", 5000, D1)
    assert kept.arrangement.state == "completed" and kept.events[-1][0] == "promise_kept"
    arr, todo, _ = follow_ups(arr, date(2026, 12, 2))
    assert todo == []  # a missed promise gets no separate note
    arr, todo, events = follow_ups(arr, date(2026, 12, 4))
    assert arr.state == "broken" and [t.kind for t in todo] == ["promise_broken"]


def test_settlement_completion_reports_the_write_off():
    deal = new_arrangement("S1", "D-1", "settlement", "EUR", 100000, [80000], [D1], date(2026, 11, 20),
                           state="accepted")
    effect = apply_payment(deal, "p", 80000, D1)
    assert effect.events[-1] == ("arrangement_completed", {"total_minor": 80000, "written_off_minor": 20000})


def test_json_round_trip():
    arr = apply_payment(plan(), "p1", 4000, D1).arrangement
    assert type(arr).from_json(arr.to_json()) == arr


def test_floats_are_refused():
    with pytest.raises(TypeError):
        new_arrangement("A", "D", "plan", "EUR", 100, [99.5], [D1], D1)
    with pytest.raises(TypeError):
        apply_payment(plan(), "p", 10.0, D1)


@given(st.lists(st.integers(1, 50_000), min_size=1, max_size=12),
       st.lists(st.integers(1, 80_000), max_size=20))
def test_payments_never_lose_or_invent_money(amounts, payments):
    dates = [date(2027, 1, 1).replace(month=1 + i % 12, year=2027 + i // 12) for i in range(len(amounts))]
    arr = new_arrangement("A", "D", "plan", "EUR", sum(amounts), amounts, dates, date(2026, 12, 1),
                          state="accepted")
    unallocated = 0
    for n, p in enumerate(payments):
        effect = apply_payment(arr, f"p{n}", p, date(2027, 1, 1))
        arr, unallocated = effect.arrangement, unallocated + effect.unallocated_minor
    received = sum(payments)
    assert arr.paid_minor + unallocated == received
    assert arr.paid_minor <= arr.total_minor
    assert all(0 <= i.paid_minor <= i.amount_minor for i in arr.instalments)
    assert (arr.state == "completed") == (arr.outstanding_minor == 0)
