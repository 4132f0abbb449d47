"""Does an answer prove who the person is? Pure matching of one answer against one method.

Methods (policies/arrangements.yml, `verification.methods`): the date of birth, the postcode
and the creditor's reference number, as written by a person in any of our three languages
("31-01-1985", "31 januari 1985", "31. Januar 1985"; "1012 ab"; "nwm 2026 62403").
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import dateparser

METHODS = ("date_of_birth", "postcode", "reference")


def parse_birth_date(text: str) -> date | None:
    # A birth date is in the past and written day first in all three languages we serve.
    parsed = dateparser.parse(text, settings={"DATE_ORDER": "DMY", "PREFER_DATES_FROM": "past",
                                              "STRICT_PARSING": True},
                              languages=["en", "nl", "de"])
    return parsed.date() if parsed else None


def _compact(text: str) -> str:
    """Upper case without spaces, dashes or dots: "nwm 2026.62403" == "NWM-2026-62403"."""
    return re.sub(r"[\s\-./]+", "", text).upper()


def answer_matches(method: str, answer: str, debtor: Any) -> bool:
    """`debtor` has date_of_birth, postcode and reference (bot.core.debtors.Debtor)."""
    answer = (answer or "").strip()[:100]
    if not answer:
        return False
    if method == "date_of_birth":
        return parse_birth_date(answer) == debtor.date_of_birth
    if method == "postcode":
        return bool(debtor.postcode) and _compact(answer) == _compact(debtor.postcode)
    if method == "reference":
        return bool(debtor.reference) and _compact(answer) == _compact(debtor.reference)
    raise ValueError(f"unknown verification method {method!r}")
