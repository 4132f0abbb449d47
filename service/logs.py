"""Structured JSON logs (structlog) that never carry a message body, a token, or a whole
phone number or email address.

Keys named like bodies or secrets are dropped; phone numbers and emails anywhere in a value
are masked (+3161****78, j***@example.com) so a log line can still be correlated with a case
by someone who already knows the number.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

DROPPED_KEYS = {"body", "text", "message_body", "token", "password", "secret", "authorization",
                "auth_token", "vars"}
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")


def mask(value: str) -> str:
    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 8:
            return match.group(0)
        return match.group(0)[:4] + "****" + digits[-2:]

    return _PHONE.sub(phone, _EMAIL.sub(r"\1***@\2", value))


def scrub(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if key.lower() in DROPPED_KEYS:
            event[key] = "[dropped]"
        elif isinstance(event[key], str):
            event[key] = mask(event[key])
    return event


class _CurrentStderr:
    """Whatever sys.stderr is at the time of writing (test capture swaps it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(stream=sys.stderr, level=level, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
