"""Synthetic debtors for the simulator: a realistic weekly cohort, valid as an import file.

Pure code, seeded. Each record goes through :func:`bot.core.debtors.parse_debtor`, the same
validation an imported portfolio gets, so phone numbers are valid for their country, emails
are valid and postcodes have the country's shape.

The cohort spreads over the segments of policies/segments.yml by its due dates, balances and
payment histories; days past due are chosen away from the segment boundaries so a debtor
stays in their segment for the length of a workflow (later cohorts' debtors do move on, as
real ones do).
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from bot.core.debtors import Debtor, parse_debtor

COUNTRIES = {"NL": 0.45, "DE": 0.30, "GB": 0.25}
#: Which segment the cohort's debtors are made for, and how many of each.
SEGMENT_MIX = {"early": 0.32, "mid": 0.25, "late": 0.18, "late_high": 0.10, "broken_promise": 0.15}
CHANNEL_MIX = {"sms": 0.45, "whatsapp": 0.30, "email": 0.25}

_NAMES = {
    "NL": (["Anna", "Daan", "Emma", "Lucas", "Sophie", "Bram", "Julia", "Sem", "Tess", "Milan"],
           ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "Mulder", "de Boer"]),
    "DE": (["Lena", "Jonas", "Mia", "Felix", "Hannah", "Paul", "Lea", "Lukas", "Emilia", "Finn"],
           ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann"]),
    "GB": (["Oliver", "Amelia", "Jack", "Isla", "Harry", "Ava", "George", "Mia", "Noah", "Grace"],
           ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Thomas"]),
}
_CREDITORS = {
    "NL": [("Tulpnet Telecom", "telecom"), ("Polderlicht Energie", "energy"),
           ("Dijkstra Krediet", "loan"), ("Grachtenhuis Wonen", "retail")],
    "DE": [("Funkwerk Mobil", "telecom"), ("Rheinstrom Energie", "energy"),
           ("Elbtal Kredit", "loan"), ("Kaufhaus Lindner", "retail")],
    "GB": [("Northwind Mobile", "telecom"), ("Brightwater Energy", "energy"),
           ("Keystone Lending", "loan"), ("Hollis & Vane", "retail")],
}
_GB_POSTCODES = ["M1 1AE", "LS1 4DY", "B2 4QA", "EH1 1YZ", "SW1A 1AA", "CF10 1EP", "BS1 4ST",
                 "G1 1XQ", "NE1 7RU", "L1 8JQ"]
_LETTERS = "ABCDEFGHJKLMNPRTVWXZ"


def debtor_id(week: int, index: int) -> str:
    return f"S-W{week}-{index:05d}"


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _phone(country: str, serial: int) -> str:
    if country == "NL":
        return f"+3161{serial:07d}"
    if country == "DE":
        return f"+49151{serial:08d}"
    return f"+4474{serial:08d}"


def _postcode(rng: random.Random, country: str) -> str:
    if country == "NL":
        return f"{rng.randint(1000, 9999)} {rng.choice(_LETTERS)}{rng.choice(_LETTERS)}"
    if country == "DE":
        return f"{rng.randint(10000, 99999)}"
    return rng.choice(_GB_POSTCODES)


def make_cohort(week: int, size: int, as_of: date, rng: random.Random) -> list[Debtor]:
    """`size` debtors for week `week` (from 1), as they would be imported on `as_of`."""
    if size > 99_999:
        raise ValueError("at most 99999 debtors a week")
    debtors = []
    for index in range(size):
        record, made_for = _record(week, index, as_of, rng)
        parsed = parse_debtor(record, as_of=as_of, row=index + 1)
        if isinstance(parsed, list):
            raise ValueError(f"synthetic debtor {record['id']} ({made_for}) is invalid: "
                             + "; ".join(str(e) for e in parsed))
        debtors.append(parsed)
    return debtors


def _record(week: int, index: int, as_of: date, rng: random.Random) -> tuple[dict[str, str], str]:
    country = _pick(rng, COUNTRIES)
    segment = _pick(rng, SEGMENT_MIX)
    own_language = {"NL": "nl", "DE": "de", "GB": "en"}[country]
    language = own_language if rng.random() < 0.9 else "en"
    first = rng.choice(_NAMES[country][0])
    last = rng.choice(_NAMES[country][1])
    creditor, product = rng.choice(_CREDITORS[country])
    # days past due and balance (major units) for the segment the debtor is made for
    if segment == "early":
        dpd, balance = rng.randint(2, 16), rng.lognormvariate(4.8, 0.7)
    elif segment == "mid":
        dpd, balance = rng.randint(31, 78), rng.lognormvariate(5.3, 0.7)
    elif segment == "late_high":
        dpd, balance = rng.randint(95, 400), rng.uniform(1000, 6000)
    elif segment == "late":
        dpd, balance = rng.randint(95, 400), rng.uniform(40, 990)
    else:
        dpd, balance = rng.randint(5, 200), rng.lognormvariate(5.5, 0.8)
    history = "broken_promise" if segment == "broken_promise" else \
        rng.choices(["good", "late", "none"], weights=[0.35, 0.45, 0.20])[0]
    channel = _pick(rng, CHANNEL_MIX)
    opt_in = channel == "whatsapp" or rng.random() < 0.3
    age = rng.randint(19, 80)
    born = as_of - timedelta(days=age * 365 + rng.randint(0, 364))
    serial = week * 100_000 + index
    ident = debtor_id(week, index)
    record = {
        "id": ident, "first_name": first, "last_name": last,
        "phone": _phone(country, serial),
        "email": f"{first}.{last.replace(' ', '')}.{week}x{index}@example.org".lower()
                 .replace("ü", "ue"),
        "language": language, "country": country, "date_of_birth": born.isoformat(),
        "postcode": _postcode(rng, country), "reference": f"SIM-{week}-{index:05d}",
        "creditor": creditor, "balance": f"{min(balance, 20000):.2f}",
        "currency": "GBP" if country == "GB" else "EUR",
        "due_date": (as_of - timedelta(days=dpd)).isoformat(), "product": product,
        "payment_history": history, "preferred_channel": channel,
        "whatsapp_opt_in": "true" if opt_in else "false",
    }
    return record, segment
