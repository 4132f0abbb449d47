"""Contact windows: the debtor's wall clock decides, in every zone they may be in, DST included.

Every test passes explicit instants (the module has no clock). Where DST matters the expected
answers are written as UTC instants, worked out by hand from the published transitions:
Europe 29 March 2026 01:00 UTC (+1 -> +2) and 25 October 2026 01:00 UTC (+2 -> +1);
US 8 March 2026 02:00 local (EST -> EDT) and 1 November 2026 02:00 local (EDT -> EST).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core.contact_windows import (
    POLICY_PATH,
    ContactRulesError,
    Window,
    candidate_zones,
    default_jurisdictions,
    is_open,
    load_packs,
    local_now,
    next_opening,
    window_of,
)

AMS, BER, LON = "Europe/Amsterdam", "Europe/Berlin", "Europe/London"
NY, LA = "America/New_York", "America/Los_Angeles"

JUR = default_jurisdictions()
NL, DE, UK, US = (JUR.packs[name] for name in ("EU/NL", "DE", "UK", "US"))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int) -> datetime:
    """A wall-clock time in ``zone`` (unambiguous ones only), as an aware datetime."""
    return datetime(*args, tzinfo=ZoneInfo(zone))


def pack(name: str = "TEST", *, every_day: str = "08:00-21:00", holiday_country: str = "NL",
         **windows: str):
    """A one-pack configuration with the same window every day unless overridden."""
    body = {"holiday_country": holiday_country, "weekday": every_day, "saturday": every_day,
            "sunday": every_day, "public_holiday": every_day, **windows}
    return load_packs({"packs": {name: body}, "countries": {}, "default_pack": name}).packs[name]


# --------------------------------------------------------------------------- zones


def test_single_zone_countries_use_their_zone():
    assert candidate_zones("GB", None) == (LON,)
    assert candidate_zones("NL", None) == (AMS,)
    assert candidate_zones("nl", "+12125550123") == (AMS,)  # the address wins in a 1-zone country


def test_multi_zone_country_is_narrowed_by_the_area_code():
    assert candidate_zones("US", "+12125550123") == (NY,)
    assert candidate_zones("US", "+13105550123") == (LA,)
    assert candidate_zones("US", "+19075550123") == ("America/Adak", "America/Anchorage")


def test_multi_zone_country_without_a_usable_phone_keeps_every_zone():
    every = candidate_zones("US", None)
    assert len(every) > 10 and every == tuple(sorted(set(every)))
    assert {NY, LA, "Pacific/Honolulu", "America/Anchorage"} <= set(every)
    assert candidate_zones("US", "+18005550123") == every   # toll-free: the whole continent
    assert candidate_zones("US", "+14165550123") == every   # a Toronto number: not in the US
    assert candidate_zones("US", "not a number") == every


def test_without_a_country_the_phone_decides_then_the_default():
    assert candidate_zones(None, "+31612345678") == (AMS,)
    assert candidate_zones("", "+4930123456") == (BER,)
    assert candidate_zones("XX", "+4930123456") == (BER,)     # unknown country: as if none
    assert candidate_zones(None, "+447700900123") == (AMS,)   # UK mobile: "Etc/Unknown"
    assert candidate_zones(None, None) == (AMS,)
    assert candidate_zones(None, None, default=LON) == (LON,)
    assert JUR.zones_for(None, None) == (AMS,)


def test_germany_has_two_zones_busingen_included():
    assert candidate_zones("DE", None) == (BER, "Europe/Busingen")
    assert candidate_zones("DE", "+4930123456") == (BER,)


# --------------------------------------------------------------------------- packs


def test_countries_map_to_packs_and_unknown_ones_to_the_default():
    assert [JUR.pack_for(c).name for c in ("NL", "BE", "DE", "AT", "GB", "IE", "US", "CA")] == [
        "EU/NL", "EU/NL", "DE", "DE", "UK", "UK", "US", "US"]
    assert JUR.pack_for("gb").name == "UK"
    assert JUR.pack_for(None).name == JUR.pack_for("FR").name == "EU/NL"


def test_the_shipped_defaults():
    assert (str(NL.weekday), str(NL.saturday), NL.sunday, NL.public_holiday) == (
        "08:00-21:00", "09:00-17:00", None, None)
    assert (str(DE.weekday), str(DE.saturday), DE.sunday, DE.public_holiday) == (
        "08:00-20:00", "09:00-14:00", None, None)
    assert (str(UK.weekday), str(UK.saturday), UK.sunday, UK.public_holiday) == (
        "08:00-21:00", "08:00-21:00", None, None)
    assert {str(w) for w in (US.weekday, US.saturday, US.sunday, US.public_holiday)} == {
        "08:00-21:00"}
    assert load_packs(POLICY_PATH) == JUR


# --------------------------------------------------------------------------- one zone, one day


@pytest.mark.parametrize(("zone", "the_pack", "wall", "expected"), [
    # NL: Monday 20 April 2026
    (AMS, NL, (2026, 4, 20, 7, 59), False),
    (AMS, NL, (2026, 4, 20, 8, 0), True),
    (AMS, NL, (2026, 4, 20, 20, 59), True),
    (AMS, NL, (2026, 4, 20, 21, 0), False),
    # NL Saturday 25 April: 09:00-17:00; Sunday closed; Koningsdag (Monday 27 April) closed
    (AMS, NL, (2026, 4, 25, 8, 30), False),
    (AMS, NL, (2026, 4, 25, 16, 59), True),
    (AMS, NL, (2026, 4, 25, 17, 0), False),
    (AMS, NL, (2026, 4, 26, 12, 0), False),
    (AMS, NL, (2026, 4, 27, 12, 0), False),
    (AMS, NL, (2026, 4, 28, 12, 0), True),
    # DE: weekday to 20:00; Saturday 09:00-14:00; 3 October 2026 is a Saturday and a Feiertag
    (BER, DE, (2026, 9, 30, 19, 59), True),
    (BER, DE, (2026, 9, 30, 20, 0), False),
    (BER, DE, (2026, 9, 26, 9, 0), True),
    (BER, DE, (2026, 9, 26, 14, 0), False),
    (BER, DE, (2026, 10, 3, 10, 0), False),
    (BER, DE, (2026, 10, 4, 10, 0), False),
    # UK: Saturday open to 21:00, Sunday closed, Christmas Day closed
    (LON, UK, (2026, 12, 19, 20, 59), True),
    (LON, UK, (2026, 12, 19, 21, 0), False),
    (LON, UK, (2026, 12, 20, 12, 0), False),
    (LON, UK, (2026, 12, 25, 12, 0), False),
    (LON, UK, (2026, 8, 31, 12, 0), False),   # England's August bank holiday
    (LON, UK, (2026, 11, 30, 12, 0), False),  # St Andrew's Day: every UK nation is honoured
    # US: Reg F hours every day, holidays included (4 July 2026 is a Saturday)
    (NY, US, (2026, 7, 4, 7, 59), False),
    (NY, US, (2026, 7, 4, 8, 0), True),
    (NY, US, (2026, 7, 4, 20, 59), True),
    (NY, US, (2026, 7, 4, 21, 0), False),
    (NY, US, (2026, 12, 27, 12, 0), True),
])
def test_windows_per_pack(zone, the_pack, wall, expected):
    assert is_open(the_pack, (zone,), local(zone, *wall)) is expected


def test_a_zone_may_be_given_as_a_plain_string():
    assert is_open(NL, AMS, local(AMS, 2026, 4, 20, 12, 0))


def test_now_must_be_aware_and_zones_known():
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(NL, (AMS,), datetime(2026, 4, 20, 12, 0))
    with pytest.raises(ContactRulesError, match="at least one time zone"):
        is_open(NL, (), utc(2026, 4, 20, 12, 0))
    with pytest.raises(ContactRulesError, match="unknown time zone 'Mars/Olympus'"):
        is_open(NL, ("Mars/Olympus",), utc(2026, 4, 20, 12, 0))


def test_next_opening_is_now_when_open_and_always_utc():
    now = local(AMS, 2026, 4, 20, 12, 0)
    assert next_opening(NL, (AMS,), now) == utc(2026, 4, 20, 10, 0)
    assert next_opening(NL, (AMS,), now).tzinfo is UTC


# --------------------------------------------------------------------------- deferrals


@pytest.mark.parametrize(("zone", "the_pack", "now", "expected"), [
    # NL Friday 21:00 -> Saturday 09:00; Saturday 17:00 -> Monday 08:00 (CEST)
    (AMS, NL, local(AMS, 2026, 4, 17, 21, 0), utc(2026, 4, 18, 7, 0)),
    (AMS, NL, local(AMS, 2026, 4, 18, 17, 0), utc(2026, 4, 20, 6, 0)),
    # NL Koningsdag Monday 27 April -> Tuesday 08:00 CEST
    (AMS, NL, local(AMS, 2026, 4, 27, 12, 0), utc(2026, 4, 28, 6, 0)),
    # NL New Year: Thursday 31 Dec 21:00 -> 1 Jan (holiday) -> Saturday 2 Jan 09:00 CET
    (AMS, NL, local(AMS, 2026, 12, 31, 21, 0), utc(2027, 1, 2, 8, 0)),
    # NL Christmas: Thursday 24 Dec 21:00 -> 25, 26 (holidays), 27 (Sunday) -> Mon 08:00 CET
    (AMS, NL, local(AMS, 2026, 12, 24, 21, 0), utc(2026, 12, 28, 7, 0)),
    # DE Saturday 14:00 -> Monday 08:00; Friday 2 Oct 20:00 -> Saturday 3 Oct is a Feiertag
    (BER, DE, local(BER, 2026, 9, 26, 14, 0), utc(2026, 9, 28, 6, 0)),
    (BER, DE, local(BER, 2026, 10, 2, 20, 0), utc(2026, 10, 5, 6, 0)),
    # DE Christmas Eve 20:00 -> Monday 28 Dec 08:00 CET
    (BER, DE, local(BER, 2026, 12, 24, 20, 0), utc(2026, 12, 28, 7, 0)),
    # UK Christmas: 24 Dec 21:00 -> 25 (Fri), 26 (Sat, Boxing Day), 27 (Sun),
    # 28 (Boxing Day observed) -> Tuesday 29 Dec 08:00 GMT
    (LON, UK, local(LON, 2026, 12, 24, 21, 0), utc(2026, 12, 29, 8, 0)),
    # UK New Year: 31 Dec 21:00 -> 1 Jan (all nations), 2 Jan (Saturday, Scotland), 3 Jan
    # (Sunday), 4 Jan (Scotland's 2 January observed) -> Tuesday 5 Jan 08:00 GMT
    (LON, UK, local(LON, 2026, 12, 31, 21, 0), utc(2027, 1, 5, 8, 0)),
    # UK Saturday 21:00 -> Monday 08:00 BST
    (LON, UK, local(LON, 2026, 6, 6, 21, 0), utc(2026, 6, 8, 7, 0)),
    # ... but Monday 15 June 2026 is a Scottish bank holiday (the World Cup): Tuesday
    (LON, UK, local(LON, 2026, 6, 13, 21, 0), utc(2026, 6, 16, 7, 0)),
    # US: 21:00 on 3 July -> 4 July 08:00 EDT (holidays are open under Reg F)
    (NY, US, local(NY, 2026, 7, 3, 21, 0), utc(2026, 7, 4, 12, 0)),
])
def test_next_opening_across_nights_weekends_and_holidays(zone, the_pack, now, expected):
    assert next_opening(the_pack, (zone,), now) == expected
    assert not is_open(the_pack, (zone,), now)
    assert not is_open(the_pack, (zone,), expected - timedelta(seconds=1))


def test_several_zones_open_only_when_open_in_all():
    zones = (NY, LA)
    monday_0830_ny = utc(2026, 6, 15, 12, 30)      # 05:30 in Los Angeles
    assert is_open(US, (NY,), monday_0830_ny)
    assert not is_open(US, zones, monday_0830_ny)
    assert next_opening(US, zones, monday_0830_ny) == utc(2026, 6, 15, 15, 0)  # 08:00 PDT
    # and it closes at 21:00 in New York (18:00 in Los Angeles)
    assert is_open(US, zones, utc(2026, 6, 16, 0, 59))
    assert not is_open(US, zones, utc(2026, 6, 16, 1, 0))
    assert next_opening(US, zones, utc(2026, 6, 16, 1, 0)) == utc(2026, 6, 16, 15, 0)


def test_a_us_debtor_of_unknown_zone_waits_for_hawaii_and_stops_at_new_york():
    zones = candidate_zones("US", None)
    assert next_opening(US, zones, utc(2026, 6, 15, 12, 0)) == utc(2026, 6, 15, 18, 0)
    assert is_open(US, zones, utc(2026, 6, 16, 0, 59))
    assert not is_open(US, zones, utc(2026, 6, 16, 1, 0))


def test_a_pack_that_never_opens_is_an_error_not_a_dropped_message():
    never = pack(every_day="closed")
    with pytest.raises(ContactRulesError, match="no contact window within 30 days"):
        next_opening(never, (AMS,), utc(2026, 4, 20, 12, 0))


# --------------------------------------------------------------------------- preferences


def test_not_before_noon_narrows_the_window():
    monday_9 = local(AMS, 2026, 4, 20, 9, 0)
    noon = time(12, 0)
    assert is_open(NL, (AMS,), monday_9)
    assert not is_open(NL, (AMS,), monday_9, not_before=noon)
    assert next_opening(NL, (AMS,), monday_9, not_before=noon) == utc(2026, 4, 20, 10, 0)
    # Saturday (09:00-17:00) from noon too; Sunday stays closed
    saturday_8 = local(AMS, 2026, 4, 18, 8, 0)
    assert next_opening(NL, (AMS,), saturday_8, not_before=noon) == utc(2026, 4, 18, 10, 0)


def test_not_after_narrows_and_preferences_never_widen():
    evening = local(AMS, 2026, 4, 20, 18, 0)
    assert not is_open(NL, (AMS,), evening, not_after=time(18, 0))
    assert next_opening(NL, (AMS,), evening, not_after=time(18, 0)) == utc(2026, 4, 21, 6, 0)
    early = local(AMS, 2026, 4, 20, 7, 0)
    assert not is_open(NL, (AMS,), early, not_before=time(6, 0))
    late = local(AMS, 2026, 4, 20, 22, 0)
    assert not is_open(NL, (AMS,), late, not_after=time(23, 0))
    with pytest.raises(ContactRulesError):  # "only after 22:00" meets no window
        next_opening(NL, (AMS,), early, not_before=time(22, 0))


def test_window_narrowing():
    window = Window(time(8), time(21))
    assert window.narrowed(time(12), None) == Window(time(12), time(21))
    assert window.narrowed(None, time(18)) == Window(time(8), time(18))
    assert window.narrowed(time(21), None) is None
    assert window.narrowed(time(0), time(23, 59)) == window


# --------------------------------------------------------------------------- DST


EVERY_DAY_NL = pack()
EVERY_DAY_US = pack(holiday_country="US")


@pytest.mark.parametrize(("zone", "day", "start", "end"), [
    # Europe spring forward, Sunday 29 March 2026
    (AMS, date(2026, 3, 28), utc(2026, 3, 28, 7, 0), utc(2026, 3, 28, 20, 0)),
    (AMS, date(2026, 3, 29), utc(2026, 3, 29, 6, 0), utc(2026, 3, 29, 19, 0)),
    (AMS, date(2026, 3, 30), utc(2026, 3, 30, 6, 0), utc(2026, 3, 30, 19, 0)),
    (LON, date(2026, 3, 28), utc(2026, 3, 28, 8, 0), utc(2026, 3, 28, 21, 0)),
    (LON, date(2026, 3, 29), utc(2026, 3, 29, 7, 0), utc(2026, 3, 29, 20, 0)),
    # Europe fall back, Sunday 25 October 2026
    (AMS, date(2026, 10, 24), utc(2026, 10, 24, 6, 0), utc(2026, 10, 24, 19, 0)),
    (AMS, date(2026, 10, 25), utc(2026, 10, 25, 7, 0), utc(2026, 10, 25, 20, 0)),
    (LON, date(2026, 10, 25), utc(2026, 10, 25, 8, 0), utc(2026, 10, 25, 21, 0)),
    # US spring forward, Sunday 8 March 2026
    (NY, date(2026, 3, 7), utc(2026, 3, 7, 13, 0), utc(2026, 3, 8, 2, 0)),
    (NY, date(2026, 3, 8), utc(2026, 3, 8, 12, 0), utc(2026, 3, 9, 1, 0)),
    (LA, date(2026, 3, 8), utc(2026, 3, 8, 15, 0), utc(2026, 3, 9, 4, 0)),
    # US fall back, Sunday 1 November 2026
    (NY, date(2026, 10, 31), utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 1, 0)),
    (NY, date(2026, 11, 1), utc(2026, 11, 1, 13, 0), utc(2026, 11, 2, 2, 0)),
    (LA, date(2026, 11, 1), utc(2026, 11, 1, 16, 0), utc(2026, 11, 2, 5, 0)),
])
def test_a_0800_opening_lands_on_the_right_utc_instant_around_dst(zone, day, start, end):
    the_pack = EVERY_DAY_US if zone in (NY, LA) else EVERY_DAY_NL
    assert window_of(the_pack, zone, day) == (start, end)
    assert not is_open(the_pack, (zone,), start - timedelta(seconds=1))
    assert is_open(the_pack, (zone,), start)
    assert is_open(the_pack, (zone,), end - timedelta(seconds=1))
    assert not is_open(the_pack, (zone,), end)
    assert next_opening(the_pack, (zone,), start - timedelta(hours=3)) == start


def test_next_opening_over_the_spring_forward_night():
    # Saturday 28 March 22:00 UTC (23:00 CET) -> Sunday 29 March 08:00 CEST = 06:00 UTC
    assert next_opening(EVERY_DAY_NL, (AMS,), utc(2026, 3, 28, 22, 0)) == utc(2026, 3, 29, 6, 0)
    # NL pack: Friday 27 March 21:00 CET -> Saturday 09:00 CET; Saturday 17:00 CET -> Monday
    # 08:00 CEST (the weekend crosses the change)
    assert next_opening(NL, (AMS,), utc(2026, 3, 27, 20, 0)) == utc(2026, 3, 28, 8, 0)
    assert next_opening(NL, (AMS,), utc(2026, 3, 28, 16, 0)) == utc(2026, 3, 30, 6, 0)
    # and back in October: Saturday 17:00 CEST -> Monday 08:00 CET
    assert next_opening(NL, (AMS,), utc(2026, 10, 24, 15, 0)) == utc(2026, 10, 26, 7, 0)


def test_a_start_skipped_by_spring_forward_opens_at_the_jump():
    # 29 March 2026 in Amsterdam the clock goes 02:00 CET -> 03:00 CEST at 01:00 UTC;
    # 02:30 never shows. We open when the clock first shows 02:30 or later: 03:00 CEST.
    night = pack(every_day="02:30-04:00")
    assert window_of(night, AMS, date(2026, 3, 29)) == (utc(2026, 3, 29, 1, 0),
                                                         utc(2026, 3, 29, 2, 0))
    assert not is_open(night, (AMS,), utc(2026, 3, 29, 0, 59, 59))  # 01:59:59 CET
    assert is_open(night, (AMS,), utc(2026, 3, 29, 1, 0))           # 03:00 CEST
    assert next_opening(night, (AMS,), utc(2026, 3, 28, 23, 0)) == utc(2026, 3, 29, 1, 0)
    # New York, 8 March 2026: 02:00 EST -> 03:00 EDT at 07:00 UTC
    assert next_opening(night, (NY,), utc(2026, 3, 8, 5, 0)) == utc(2026, 3, 8, 7, 0)
    # a window wholly inside the gap does not exist that day
    assert window_of(pack(every_day="02:10-02:50"), AMS, date(2026, 3, 29)) is None


def test_a_start_repeated_by_fall_back_opens_at_its_first_occurrence():
    # 25 October 2026 in Amsterdam 03:00 CEST -> 02:00 CET at 01:00 UTC; 02:00-03:00 shows
    # twice. Open while the clock shows 02:30-04:00: first from 02:30 CEST (00:30 UTC), closed
    # when the clock is set back to 02:00 (01:00 UTC), open again at 02:30 CET (01:30 UTC).
    night = pack(every_day="02:30-04:00")
    assert window_of(night, AMS, date(2026, 10, 25)) == (utc(2026, 10, 25, 0, 30),
                                                         utc(2026, 10, 25, 3, 0))
    assert not is_open(night, (AMS,), utc(2026, 10, 25, 0, 29))
    assert is_open(night, (AMS,), utc(2026, 10, 25, 0, 30))
    assert is_open(night, (AMS,), utc(2026, 10, 25, 0, 59))
    assert not is_open(night, (AMS,), utc(2026, 10, 25, 1, 0))
    assert next_opening(night, (AMS,), utc(2026, 10, 25, 1, 0)) == utc(2026, 10, 25, 1, 30)
    assert next_opening(night, (AMS,), utc(2026, 10, 24, 22, 0)) == utc(2026, 10, 25, 0, 30)


def test_an_end_reached_again_by_fall_back():
    # Window 01:00-02:30 on 25 October: the clock shows 02:30 CEST at 00:30 UTC (close), then
    # 02:00 CET at 01:00 UTC (inside again) until 02:30 CET at 01:30 UTC.
    night = pack(every_day="01:00-02:30")
    assert not is_open(night, (AMS,), utc(2026, 10, 25, 0, 30))
    assert next_opening(night, (AMS,), utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 1, 0)
    assert not is_open(night, (AMS,), utc(2026, 10, 25, 1, 30))


def test_local_now():
    assert local_now(AMS, utc(2026, 3, 29, 1, 0)).hour == 3
    assert local_now(NY, utc(2026, 11, 1, 6, 0)).hour == 1  # 01:00 EST, the second one
    assert local_now(NY, utc(2026, 11, 1, 6, 0)).fold == 1


# --------------------------------------------------------------------------- validation


DELETE = object()


def config(**changes):
    """The shipped configuration as a mapping, with ``changes`` applied at ``a__b__c`` paths."""
    raw = yaml.safe_load(POLICY_PATH.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = raw
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return raw


@pytest.mark.parametrize(("changes", "message"), [
    ({"packs__DE__saturday": "25:00-14:00"},
     "jurisdictions.yml: packs.DE.saturday: '25:00-14:00' is not HH:MM-HH:MM"),
    ({"packs__DE__saturday": "9:00-14:00"},
     "jurisdictions.yml: packs.DE.saturday: '9:00-14:00' is not HH:MM-HH:MM"),
    ({"packs__UK__weekday": "21:00-08:00"},
     "jurisdictions.yml: packs.UK.weekday: '21:00-08:00' starts at or after its end"),
    ({"packs__UK__weekday": "08:00-08:00"},
     "jurisdictions.yml: packs.UK.weekday: '08:00-08:00' starts at or after its end"),
    ({"packs__US__sunday": False},
     "jurisdictions.yml: packs.US.sunday: expected 'closed' or a quoted 'HH:MM-HH:MM', got False"
     " (YAML reads unquoted yes/no/on/off as booleans: quote it)"),
    ({"packs__US__sunday": 480},
     "jurisdictions.yml: packs.US.sunday: expected 'closed' or a quoted 'HH:MM-HH:MM', got 480"),
    ({"packs__DE__satruday": "09:00-14:00"},
     "jurisdictions.yml: packs.DE.satruday: unknown key (allowed: holiday_country, "
     "holiday_subdivision, public_holiday, saturday, sunday, weekday)"),
    ({"packs__DE__sunday": DELETE}, "jurisdictions.yml: packs.DE.sunday: missing"),
    ({"packs__DE__holiday_country": "XX"},
     "jurisdictions.yml: packs.DE.holiday_country: 'XX' is not a country the holidays library "
     "knows (e.g. NL, DE, GB, US)"),
    ({"packs__UK__holiday_subdivision": ["ENG", "YORKSHIRE"]},
     "jurisdictions.yml: packs.UK.holiday_subdivision: 'YORKSHIRE' is not a subdivision of GB "
     "(known: ENG, NIR, SCT, WLS)"),
    ({"countries__FR": "EU/FR"},
     "jurisdictions.yml: countries.FR: unknown pack 'EU/FR' (packs: EU/NL, DE, UK, US)"),
    ({"countries__France": "EU/NL"},
     "jurisdictions.yml: countries.France: 'France' is not an ISO 3166 alpha-2 country code "
     "like 'NL'"),
    ({"default_pack": "NL"},
     "jurisdictions.yml: default_pack: unknown pack 'NL' (packs: EU/NL, DE, UK, US)"),
    ({"default_zone": "Europe/Amsterdm"},
     "jurisdictions.yml: default_zone: 'Europe/Amsterdm' is not a time zone of the tz database"),
    ({"windows": {}},
     "jurisdictions.yml: windows: unknown key (allowed: countries, default_pack, default_zone, "
     "packs)"),
    ({"countries": DELETE}, "jurisdictions.yml: countries: missing"),
])
def test_invalid_configurations_name_the_place(changes, message):
    with pytest.raises(ContactRulesError, match=f"^{re.escape(message)}$"):
        load_packs(config(**changes))


def test_the_norway_problem_is_explained():
    raw = config()
    raw["countries"][False] = "EU/NL"  # what YAML makes of an unquoted NO
    with pytest.raises(ContactRulesError, match=re.escape("quote it")):
        load_packs(raw)


def test_a_pack_named_with_a_slash_is_reported_by_its_name():
    raw = config()
    raw["packs"]["EU/NL"]["weekday"] = "8-21"
    with pytest.raises(ContactRulesError,
                       match=re.escape("packs.EU/NL.weekday: '8-21' is not HH:MM-HH:MM")):
        load_packs(raw)


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "mine.yml"
    broken.write_text("packs: [unclosed\n", encoding="utf-8")
    with pytest.raises(ContactRulesError, match=r"^mine\.yml: is not valid YAML"):
        load_packs(broken)
    with pytest.raises(ContactRulesError, match=r"^absent\.yml: cannot be read"):
        load_packs(tmp_path / "absent.yml")
    empty = tmp_path / "empty.yml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ContactRulesError, match=r"^empty\.yml: expected a mapping, got NoneType$"):
        load_packs(empty)


def test_one_subdivision_may_be_a_plain_code():
    bavaria = pack("BY", holiday_country="DE", holiday_subdivision="BY", every_day="08:00-20:00",
                   public_holiday="closed")
    assert bavaria.holiday_subdivisions == ("BY",)
    assert not is_open(bavaria, (BER,), local(BER, 2026, 6, 4, 12, 0))  # Fronleichnam in Bayern
    assert is_open(DE, (BER,), local(BER, 2026, 6, 4, 12, 0))           # not nationwide


# --------------------------------------------------------------------------- properties

ZONE_POOL = (AMS, LON, BER, NY, LA, "America/Chicago", "America/Phoenix", "Pacific/Honolulu",
             "America/St_Johns", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Sydney",
             "Australia/Lord_Howe", "Pacific/Chatham", "America/Santiago", "America/Havana",
             "Asia/Tokyo", "Pacific/Kiritimati", "Pacific/Pago_Pago")
#: Night windows that meet DST changes (which fall on Sundays in Europe and the US).
ODD_PACKS = tuple(pack(every_day=every_day, saturday=saturday)
                  for every_day, saturday in [("01:00-02:30", "00:30-01:30"),
                                              ("02:30-04:00", "02:00-03:00"),
                                              ("00:00-23:59", "23:00-23:59"),
                                              ("00:30-01:30", "closed")])
STEP = timedelta(minutes=15)
#: Clock changes in 2026 (UTC) per zone: Europe, US, Lord Howe (30 minutes), Santiago and
#: Havana (at local midnight), Chatham (+13:45/+12:45 at 02:45/03:45 local).
DST_CHANGES = (
    (AMS, utc(2026, 3, 29, 1)), (AMS, utc(2026, 10, 25, 1)),
    (LON, utc(2026, 3, 29, 1)), (LON, utc(2026, 10, 25, 1)),
    (NY, utc(2026, 3, 8, 7)), (NY, utc(2026, 11, 1, 6)),
    (LA, utc(2026, 3, 8, 10)), (LA, utc(2026, 11, 1, 9)),
    ("Australia/Lord_Howe", utc(2026, 4, 4, 15)), ("Australia/Lord_Howe", utc(2026, 10, 3, 15, 30)),
    ("America/Santiago", utc(2026, 4, 5, 3)), ("America/Santiago", utc(2026, 9, 6, 4)),
    ("America/Havana", utc(2026, 3, 8, 5)), ("America/Havana", utc(2026, 11, 1, 5)),
    ("Pacific/Chatham", utc(2026, 4, 4, 14)), ("Pacific/Chatham", utc(2026, 9, 26, 14)),
)


def assert_first_open_instant(the_pack, zones, now, opening, not_before=None, step=STEP):
    """``opening`` is open, not before ``now``, and nothing sampled before it is open."""
    assert opening >= now and opening.tzinfo is UTC
    assert is_open(the_pack, zones, opening, not_before=not_before)
    sample = now
    while sample < opening:
        assert not is_open(the_pack, zones, sample, not_before=not_before), sample
        sample += step
    if opening > now:
        assert not is_open(the_pack, zones, opening - timedelta(seconds=1), not_before=not_before)


@st.composite
def situations(draw):
    the_pack = draw(st.sampled_from((NL, DE, UK, US, *ODD_PACKS)))
    # odd windows (night hours around DST changes) in one zone; real packs in up to three
    count = 1 if the_pack in ODD_PACKS else draw(st.integers(min_value=1, max_value=3))
    zones = tuple(sorted(draw(st.sets(st.sampled_from(ZONE_POOL), min_size=count,
                                      max_size=count))))
    now = draw(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31),
                            timezones=st.just(UTC)))
    not_before = draw(st.none() | st.sampled_from((time(10), time(12), time(9, 30))))
    return the_pack, zones, now, not_before


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_next_opening_is_the_first_open_instant(situation):
    the_pack, zones, now, not_before = situation
    try:
        opening = next_opening(the_pack, zones, now, not_before=not_before)
    except ContactRulesError:
        # only when nothing in the next 30 days is open (sampled)
        sample = now
        while sample <= now + timedelta(days=30):
            assert not is_open(the_pack, zones, sample, not_before=not_before)
            sample += STEP
        return
    assert_first_open_instant(the_pack, zones, now, opening, not_before)


@pytest.mark.parametrize(("zone", "change"), DST_CHANGES)
def test_next_opening_around_clock_changes(zone, change):
    """Night windows in the hours around a clock change, where the tz arithmetic is subtle:
    every odd pack, from every 20 minutes between 5 hours before and 4 hours after."""
    for the_pack in ODD_PACKS:
        for minutes in range(-5 * 60, 4 * 60, 20):
            now = change + timedelta(minutes=minutes)
            opening = next_opening(the_pack, (zone,), now)
            assert_first_open_instant(the_pack, (zone,), now, opening, step=timedelta(minutes=5))


def test_a_window_may_run_to_midnight_and_then_is_always_open():
    packs = load_packs({
        "packs": {"ALWAYS": {"holiday_country": "NL", "weekday": "00:00-24:00",
                             "saturday": "00:00-24:00", "sunday": "00:00-24:00",
                             "public_holiday": "00:00-24:00"}},
        "countries": {"NL": "ALWAYS"}, "default_pack": "ALWAYS"})
    pack = packs.pack_for("NL")
    assert str(pack.weekday) == "00:00-24:00"
    for instant in ("2026-11-22T22:59:59+00:00", "2026-11-22T23:00:00+00:00",
                    "2026-12-25T12:00:00+00:00", "2026-03-29T01:30:00+00:00"):
        now = datetime.fromisoformat(instant)
        assert is_open(pack, ("Europe/Amsterdam",), now)
        assert next_opening(pack, ("Europe/Amsterdam",), now) == now
