"""Contact windows: may we message this debtor at ``now``, and if not, when next?

Pure code: no clock (every function takes ``now``, an aware datetime) and no I/O beyond reading
``policies/jurisdictions.yml`` and the tz database's country table. The rules (domain rules,
"Contact"):

* **Decent hours are the debtor's.** A window such as 08:00-21:00 is read on the debtor's wall
  clock, in their time zone, converted with the tz database (never a fixed offset, so DST days
  come out right). The start is included, the end is not: 20:59 is open, 21:00 is closed.
* **Which zone.** :func:`candidate_zones` takes the address country's zone when it has one; for
  a country with several (US, CA, AU, ...) the phone number's zones narrow it when they lie
  inside that country, else every zone of the country is possible. No country: the phone's
  zones. Nothing known: a configured default.
* **Several possible zones: open only when open in all of them** (Reg F: when the location is
  unknown, a time is convenient only if it is convenient in every possible location).
* **Jurisdiction packs** (:class:`JurisdictionPack`) say the window for a weekday, a Saturday,
  a Sunday and a public holiday; a public holiday overrides the day of the week. Holidays are
  those of the debtor's *local date*, from the ``holidays`` library.
* **Debtor preferences** ("not before noon") narrow a window, never widen it.
* **Outside the window a message is deferred, not dropped:** :func:`next_opening` is the first
  instant it may go, searched up to 30 days ahead.

DST, chosen to be safe and simple: *we are open exactly when the debtor's clock shows a time
inside the window.* So a start that does not exist (spring forward, 02:30 on a day the clock
jumps 02:00 -> 03:00) opens at the jump, the first instant the clock shows a time at or after
the start; a start that happens twice (fall back) opens at its first occurrence, and if the
clock is then set back to before the start, we are closed again until it shows the start a
second time. We are never open while the debtor's clock shows a time before the start or at or
after the end. (Real windows start after the small-hours transitions, so this only matters for
unusual windows or zones.)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError

import holidays
import phonenumbers
from phonenumbers import timezone as phone_timezone

from bot.core.config_files import read_yaml

POLICY_PATH = Path(__file__).resolve().parents[2] / "policies" / "jurisdictions.yml"
DEFAULT_ZONE = "Europe/Amsterdam"
#: How far :func:`next_opening` looks before it declares the rules unsatisfiable.
SEARCH_HORIZON = timedelta(days=30)
DAY_KINDS = ("weekday", "saturday", "sunday", "public_holiday")
CLOSED = "closed"

_WINDOW_RE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")
_UNKNOWN_ZONE = "Etc/Unknown"  # what phonenumbers says when a number has no geography


#: How a window written "...-24:00" ends: the last instant of the local day.
END_OF_DAY = time.max


class ContactRulesError(ValueError):
    """The jurisdiction rules are invalid, or cannot be met; the message names the place."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Window:
    """A span of one local day, ``start`` included and ``end`` excluded."""

    start: time
    end: time

    def contains(self, clock: time) -> bool:
        return self.start <= clock < self.end

    def narrowed(self, not_before: time | None, not_after: time | None) -> Window | None:
        """This window cut down to the debtor's preference; None when nothing is left."""
        start = max(self.start, not_before) if not_before is not None else self.start
        end = min(self.end, not_after) if not_after is not None else self.end
        return Window(start, end) if start < end else None

    def __str__(self) -> str:
        end = "24:00" if self.end == END_OF_DAY else f"{self.end:%H:%M}"
        return f"{self.start:%H:%M}-{end}"


@dataclass(frozen=True)
class JurisdictionPack:
    """When a jurisdiction allows contact, per kind of local day (None: closed)."""

    name: str
    holiday_country: str
    holiday_subdivisions: tuple[str, ...]  # empty: the country's nationwide holidays only
    weekday: Window | None
    saturday: Window | None
    sunday: Window | None
    public_holiday: Window | None

    def is_holiday(self, local_date: date) -> bool:
        """A public holiday in the country or in any configured subdivision."""
        subdivisions = self.holiday_subdivisions or (None,)
        return any(local_date in _holiday_dates(self.holiday_country, subdivision, local_date.year)
                   for subdivision in subdivisions)

    def day_kind(self, local_date: date) -> str:
        """Which window applies; a public holiday overrides the day of the week."""
        if self.is_holiday(local_date):
            return "public_holiday"
        return {5: "saturday", 6: "sunday"}.get(local_date.weekday(), "weekday")

    def window_on(self, local_date: date) -> Window | None:
        return getattr(self, self.day_kind(local_date))


@dataclass(frozen=True)
class Jurisdictions:
    """Every pack, and which one applies to a debtor's country."""

    packs: Mapping[str, JurisdictionPack]
    countries: Mapping[str, str]  # ISO country -> pack name
    default_pack: str
    default_zone: str = DEFAULT_ZONE

    def pack_for(self, country: str | None) -> JurisdictionPack:
        """The country's pack; the default pack for an unknown or unlisted country."""
        name = self.countries.get((country or "").strip().upper(), self.default_pack)
        return self.packs[name]

    def zones_for(self, country: str | None, phone_e164: str | None) -> tuple[str, ...]:
        """:func:`candidate_zones` with this configuration's default zone."""
        return candidate_zones(country, phone_e164, default=self.default_zone)


@functools.lru_cache(maxsize=None)
def _holiday_dates(country: str, subdivision: str | None, year: int) -> frozenset[date]:
    """One country's (or subdivision's) public holidays in one year; computed once."""
    return frozenset(holidays.country_holidays(country, subdiv=subdivision, years=year))


# --------------------------------------------------------------------------- zones


def candidate_zones(country: str | None, phone_e164: str | None, *,
                    default: str = DEFAULT_ZONE) -> tuple[str, ...]:
    """Every IANA zone the debtor may be in, sorted.

    The address decides when its country has one zone. In a country with several, a phone
    number whose zones all lie in that country narrows it (US area codes map to a zone); a
    number that does not (toll-free, foreign, unparsable) leaves every zone of the country
    possible. Without a known country the phone's zones are used; with nothing, ``default``.
    """
    country_zones = _zones_by_country().get((country or "").strip().upper(), ())
    if len(country_zones) == 1:
        return country_zones          # the phone cannot narrow it (and parsing it costs)
    phone_zones = _phone_zones(phone_e164)
    if country_zones:
        if phone_zones and set(phone_zones) <= set(country_zones):
            return phone_zones
        return country_zones
    return phone_zones or (default,)


def _phone_zones(phone_e164: str | None) -> tuple[str, ...]:
    """The zones phonenumbers gives a number, without "Etc/Unknown" or zones tzdata lacks."""
    if not phone_e164:
        return ()
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return ()
    return tuple(sorted(z for z in set(phone_timezone.time_zones_for_number(number))
                        if z != _UNKNOWN_ZONE and _zone_exists(z)))


@functools.lru_cache(maxsize=None)
def _zone_exists(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def _zones_by_country() -> Mapping[str, tuple[str, ...]]:
    """ISO country -> its zones, from the first directory of ``zoneinfo.TZPATH`` with a table.

    ``zone.tab`` is preferred: it lists each country's own zones under the names phonenumbers
    also uses (NL -> Europe/Amsterdam). ``zone1970.tab`` merges countries whose clocks have
    agreed since 1970 (NL -> Europe/Brussels, DE -> also Europe/Zurich), so it is only the
    fallback; both are read the same way (column 1 may list several countries).
    """
    for directory in TZPATH:
        for name in ("zone.tab", "zone1970.tab"):
            path = Path(directory) / name
            if path.is_file():
                return _parse_zone_table(path.read_text(encoding="utf-8"))
    raise ContactRulesError(f"no zone.tab or zone1970.tab in any of {TZPATH}")


def _parse_zone_table(text: str) -> dict[str, tuple[str, ...]]:
    zones: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        columns = line.split("\t")
        for country in columns[0].split(","):
            zones.setdefault(country.strip(), set()).add(columns[2].strip())
    return {country: tuple(sorted(names)) for country, names in zones.items()}


# --------------------------------------------------------------------------- windows


def local_now(zone: str, now: datetime) -> datetime:
    """``now`` on the debtor's wall clock in ``zone``."""
    return _as_utc(now).astimezone(_zone(zone))


def effective_window(pack: JurisdictionPack, local_date: date, *, not_before: time | None = None,
                     not_after: time | None = None) -> Window | None:
    """The window on a local date, narrowed by the debtor's preference (None: closed)."""
    window = pack.window_on(local_date)
    return window.narrowed(not_before, not_after) if window is not None else None


def is_open(pack: JurisdictionPack, zones: Iterable[str] | str, now: datetime, *,
            not_before: time | None = None, not_after: time | None = None) -> bool:
    """True when the debtor's clock shows a time inside the window in every possible zone."""
    return all(_open_in(pack, zone, now, not_before, not_after) for zone in _zone_list(zones))


def _open_in(pack: JurisdictionPack, zone: str, now: datetime, not_before: time | None,
             not_after: time | None) -> bool:
    local = local_now(zone, now)
    window = effective_window(pack, local.date(), not_before=not_before, not_after=not_after)
    return window is not None and window.contains(local.time())


def window_of(pack: JurisdictionPack, zone: str, local_date: date, *,
              not_before: time | None = None,
              not_after: time | None = None) -> tuple[datetime, datetime] | None:
    """The window of one local date as UTC instants ``(start, end)``; None when closed.

    Each end is the first instant the clock shows that time or later (see the module's DST
    rule). On a fall-back day inside the window the clock re-shows earlier times, and
    :func:`is_open` is the authority for those; with real windows this never happens.
    """
    window = effective_window(pack, local_date, not_before=not_before, not_after=not_after)
    if window is None:
        return None
    tz = _zone(zone)
    start = _first_instant_showing(tz, datetime.combine(local_date, window.start))
    end = _first_instant_showing(tz, datetime.combine(local_date, window.end))
    return (start, end) if start < end else None


def next_opening(pack: JurisdictionPack, zones: Iterable[str] | str, now: datetime, *,
                 not_before: time | None = None, not_after: time | None = None) -> datetime:
    """``now`` (in UTC) when open, else the earliest later instant open in every zone.

    Openings can only begin where some zone's clock reaches a window start, or where a zone's
    clock jumps (a DST transition); the earliest such instant at which every zone is open is
    the answer. Raises :class:`ContactRulesError` when there is none within 30 days (a pack
    closed every day, a preference outside every window, zones too far apart).
    """
    now = _as_utc(now)
    zone_list = _zone_list(zones)
    prefs = {"not_before": not_before, "not_after": not_after}
    if is_open(pack, zone_list, now, **prefs):
        return now
    horizon = now + SEARCH_HORIZON
    candidates = set()
    for zone in zone_list:
        candidates.update(_opening_candidates(pack, zone, now, horizon, not_before, not_after))
    for candidate in sorted(c for c in candidates if now < c <= horizon):
        if is_open(pack, zone_list, candidate, **prefs):
            return candidate
    raise ContactRulesError(
        f"no contact window within {SEARCH_HORIZON.days} days after {now.isoformat()} "
        f"for pack {pack.name} in {', '.join(zone_list)}")


def _opening_candidates(pack: JurisdictionPack, zone: str, now: datetime, horizon: datetime,
                        not_before: time | None, not_after: time | None) -> Iterator[datetime]:
    """Every instant in [now, horizon] (and a little around) where ``zone`` may become open."""
    tz = _zone(zone)
    day = now.astimezone(tz).date() - timedelta(days=1)
    last = horizon.astimezone(tz).date() + timedelta(days=1)
    while day <= last:
        window = effective_window(pack, day, not_before=not_before, not_after=not_after)
        if window is not None:
            yield from _instants_showing(tz, datetime.combine(day, window.start))
        day += timedelta(days=1)
    yield from _offset_changes(tz, now - timedelta(days=1), horizon)


# --------------------------------------------------------------------------- tz arithmetic


def _instants_showing(tz: ZoneInfo, wall: datetime) -> list[datetime]:
    """The UTC instants at which the clock in ``tz`` shows ``wall`` (naive).

    Usually one; two on a fall-back day; none in a spring-forward gap, where the first instant
    showing ``wall`` or later (the jump itself) stands in for it.
    """
    shown = [instant for instant in _both_folds(tz, wall) if _clock(tz, instant) == wall]
    return shown or [_first_instant_showing(tz, wall)]


def _first_instant_showing(tz: ZoneInfo, wall: datetime) -> datetime:
    """The earliest UTC instant at which the clock in ``tz`` shows ``wall`` or a later time.

    Existing times: their (first) occurrence. A time skipped by a spring-forward jump: the jump,
    found by bisection between the two readings PEP 495 gives it (one before, one after).
    """
    early, late = _both_folds(tz, wall)
    for instant in (early, late):
        if _clock(tz, instant) == wall:
            return instant
    return _bisect(early, late, lambda instant: _clock(tz, instant) >= wall)


def _both_folds(tz: ZoneInfo, wall: datetime) -> tuple[datetime, datetime]:
    """``wall`` read with fold=0 and fold=1 as UTC instants, earliest first."""
    instants = sorted(wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1))
    return instants[0], instants[1]


def _offset_changes(tz: ZoneInfo, start: datetime, end: datetime) -> Iterator[datetime]:
    """The instants in (start, end] where the UTC offset of ``tz`` changes (DST and such).

    Sampled per day, then bisected to the second; this assumes at most one change a day,
    which the tz database has never had.
    """
    step = timedelta(days=1)
    left = start
    while left < end:
        right = min(left + step, end)
        before = left.astimezone(tz).utcoffset()
        if right.astimezone(tz).utcoffset() != before:
            yield _bisect(left, right, lambda instant: instant.astimezone(tz).utcoffset() != before)
        left = right


def _bisect(low: datetime, high: datetime, reached: Callable[[datetime], bool]) -> datetime:
    """The first whole-second instant in (low, high] where ``reached`` holds.

    ``reached`` must be false at ``low``, true at ``high`` and flip once in between; tz
    transitions fall on whole seconds.
    """
    low_s, high_s = int(low.timestamp()), int(high.timestamp())
    if not high.timestamp().is_integer():
        high_s += 1
    while high_s - low_s > 1:
        middle = (low_s + high_s) // 2
        if reached(datetime.fromtimestamp(middle, UTC)):
            high_s = middle
        else:
            low_s = middle
    return datetime.fromtimestamp(high_s, UTC)


def _clock(tz: ZoneInfo, instant: datetime) -> datetime:
    """What the wall clock in ``tz`` shows at ``instant`` (naive)."""
    return instant.astimezone(tz).replace(tzinfo=None)


def _as_utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    return now.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ContactRulesError(f"unknown time zone {name!r}") from error


def _zone_list(zones: Iterable[str] | str) -> tuple[str, ...]:
    """The zones as a tuple; one zone given as a plain string counts as one zone."""
    zone_list = (zones,) if isinstance(zones, str) else tuple(zones)
    if not zone_list:
        raise ContactRulesError("at least one time zone is needed (see candidate_zones)")
    return zone_list


# --------------------------------------------------------------------------- config

_TOP_KEYS = {"packs", "countries", "default_pack", "default_zone"}
_REQUIRED_TOP_KEYS = ("packs", "countries", "default_pack")
_PACK_KEYS = {"holiday_country", "holiday_subdivision", *DAY_KINDS}
_REQUIRED_PACK_KEYS = ("holiday_country", *DAY_KINDS)
_YAML_BOOLEAN_HINT = " (YAML reads unquoted yes/no/on/off as booleans: quote it)"
_YAML_NORWAY_HINT = " (YAML reads unquoted NO as false: quote it)"
#: Builds the error for a dotted place in the file and a message.
_Fail = Callable[[str, str], ContactRulesError]


def load_packs(path_or_mapping: str | PathLike[str] | Mapping[str, Any], *,
               source: str | None = None) -> Jurisdictions:
    """Read and validate the jurisdiction rules; every error names the file and the place.

    Takes a path to a YAML file, or the already parsed mapping (``source`` names it in errors,
    ``jurisdictions.yml`` unless given).
    """
    if isinstance(path_or_mapping, Mapping):
        return _parse(path_or_mapping, source or "jurisdictions.yml")
    path = Path(path_or_mapping)
    source = source or path.name
    return _parse(read_yaml(path, ContactRulesError, source), source)


@functools.lru_cache(maxsize=1)
def default_jurisdictions() -> Jurisdictions:
    """The project's ``policies/jurisdictions.yml``, loaded once."""
    return load_packs(POLICY_PATH)


def _parse(raw: Any, source: str) -> Jurisdictions:
    def fail(where: str, message: str) -> ContactRulesError:
        return ContactRulesError(f"{source}: {where}: {message}" if where
                                 else f"{source}: {message}")

    _mapping(raw, "", fail)
    _only(raw, _TOP_KEYS, _REQUIRED_TOP_KEYS, "", fail)
    packs_raw = _mapping(raw["packs"], "packs", fail)
    if not packs_raw:
        raise fail("packs", "at least one pack is needed")
    packs = {name: _parse_pack(name, body, fail) for name, body in packs_raw.items()}
    countries = _parse_countries(raw["countries"], packs, fail)
    default_pack = _pack_name(raw["default_pack"], packs, "default_pack", fail)
    default_zone = raw.get("default_zone", DEFAULT_ZONE)
    if not isinstance(default_zone, str) or not _zone_exists(default_zone):
        raise fail("default_zone", f"{default_zone!r} is not a time zone of the tz database")
    return Jurisdictions(MappingProxyType(packs), MappingProxyType(countries), default_pack,
                         default_zone)


def _parse_pack(name: Any, body: Any, fail: _Fail) -> JurisdictionPack:
    if not isinstance(name, str) or not name:
        raise fail(f"packs.{name!r}", "a pack name must be a non-empty string")
    where = f"packs.{name}"
    _mapping(body, where, fail)
    _only(body, _PACK_KEYS, _REQUIRED_PACK_KEYS, where, fail)
    country = body["holiday_country"]
    supported = holidays.list_supported_countries()
    if not isinstance(country, str) or country not in supported:
        raise fail(f"{where}.holiday_country",
                   f"{country!r} is not a country the holidays library knows (e.g. NL, DE, GB, US)")
    subdivisions = _parse_subdivisions(country, body.get("holiday_subdivision"),
                                       supported[country], f"{where}.holiday_subdivision", fail)
    windows = {kind: _parse_window(body[kind], f"{where}.{kind}", fail) for kind in DAY_KINDS}
    return JurisdictionPack(name, country, subdivisions, **windows)


def _parse_subdivisions(country: str, raw: Any, known: list[str], where: str,
                        fail: _Fail) -> tuple[str, ...]:
    """None, one code or a list of codes, each checked by asking the holidays library."""
    if raw is None:
        return ()
    codes = [raw] if isinstance(raw, str) else raw
    if not isinstance(codes, list) or not codes:
        raise fail(where, f"expected a subdivision code or a list of them, got {raw!r}")
    for code in codes:
        try:
            if not isinstance(code, str):
                raise NotImplementedError
            holidays.country_holidays(country, subdiv=code)
        except NotImplementedError:
            raise fail(where, f"{code!r} is not a subdivision of {country} "
                              f"(known: {', '.join(known)})") from None
    return tuple(codes)


def _parse_window(raw: Any, where: str, fail: _Fail) -> Window | None:
    if raw == CLOSED:
        return None
    if not isinstance(raw, str):
        hint = _YAML_BOOLEAN_HINT if isinstance(raw, bool) else ""
        raise fail(where, f"expected {CLOSED!r} or a quoted 'HH:MM-HH:MM', got {raw!r}{hint}")
    match = _WINDOW_RE.match(raw.strip())
    if not match:
        raise fail(where, f"{raw!r} is not HH:MM-HH:MM")
    hours_start, minutes_start, hours_end, minutes_end = (int(part) for part in match.groups())
    # "24:00" may end a window: the whole rest of the day ("00:00-24:00" is always open).
    end_of_day = (hours_end, minutes_end) == (24, 0)
    if hours_start > 23 or (hours_end > 23 and not end_of_day) or minutes_start > 59 \
            or minutes_end > 59:
        raise fail(where, f"{raw!r} is not HH:MM-HH:MM")
    end = END_OF_DAY if end_of_day else time(hours_end, minutes_end)
    window = Window(time(hours_start, minutes_start), end)
    if window.start >= window.end:
        raise fail(where, f"{raw!r} starts at or after its end")
    return window


def _parse_countries(raw: Any, packs: Mapping[str, JurisdictionPack],
                     fail: _Fail) -> dict[str, str]:
    _mapping(raw, "countries", fail)
    countries = {}
    for country, pack in raw.items():
        if not isinstance(country, str) or not _COUNTRY_RE.match(country):
            hint = _YAML_NORWAY_HINT if isinstance(country, bool) else ""
            raise fail(f"countries.{country}",
                       f"{country!r} is not an ISO 3166 alpha-2 country code like 'NL'{hint}")
        countries[country] = _pack_name(pack, packs, f"countries.{country}", fail)
    return countries


def _pack_name(name: Any, packs: Mapping[str, JurisdictionPack], where: str, fail: _Fail) -> str:
    if name not in packs:
        raise fail(where, f"unknown pack {name!r} (packs: {', '.join(packs)})")
    return name


def _mapping(raw: Any, where: str, fail: _Fail) -> Mapping[Any, Any]:
    if not isinstance(raw, Mapping):
        raise fail(where, f"expected a mapping, got {type(raw).__name__}")
    return raw


def _only(raw: Mapping[Any, Any], allowed: set[str], required: Iterable[str], where: str,
          fail: _Fail) -> None:
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in allowed:
            raise fail(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in raw:
            raise fail(f"{prefix}{key}", "missing")
