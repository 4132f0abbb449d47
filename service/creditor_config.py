"""policies/creditors.yml: where each creditor's business events are delivered and which
environment variable holds the secret they are signed with.

Every mistake is reported at load, one line each as ``<file>: <dotted.path>: <problem>``, all
at once, so an operator fixes the file in one go.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.core.config_files import read_yaml

FILE_NAME = "creditors.yml"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_ENTRY_KEYS = ("events_url", "secret_env")


class CreditorConfigError(ValueError):
    """policies/creditors.yml is wrong; the message names every problem."""


@dataclass(frozen=True)
class CreditorEndpoint:
    events_url: str | None     # None: this creditor gets no deliveries
    secret_env: str | None     # the environment variable holding its signing secret


@dataclass(frozen=True)
class CreditorConfig:
    default: CreditorEndpoint
    creditors: dict[str, CreditorEndpoint]

    def for_creditor(self, creditor: str | None) -> CreditorEndpoint:
        """A creditor's endpoint; the default for one not listed (or an event without one)."""
        return self.creditors.get(creditor or "", self.default)

    @property
    def secret_envs(self) -> set[str]:
        """Every environment variable a delivery may need."""
        entries = [self.default, *self.creditors.values()]
        return {e.secret_env for e in entries if e.events_url and e.secret_env}

    def secrets_from(self, env: Mapping[str, str]) -> dict[str, str]:
        """Just the signing secrets out of an environment (os.environ, .run/secrets.env)."""
        return {name: env[name] for name in self.secret_envs if env.get(name)}

    def missing_secrets(self, secrets: Mapping[str, str]) -> list[str]:
        """Secret variables the config names but `secrets` lacks: deliveries through them
        would be retried until the secret is set. For a warning at start-up."""
        return sorted(name for name in self.secret_envs if not secrets.get(name))

    def all_to(self, url: str) -> CreditorConfig:
        """Every creditor's events to one URL (the sandbox creditor of `make run` and the
        tests: NUDGE_CREDITOR_EVENTS_URL), each keeping its secret."""
        def moved(entry: CreditorEndpoint) -> CreditorEndpoint:
            return CreditorEndpoint(url, entry.secret_env or self.default.secret_env)
        return CreditorConfig(moved(self.default), {n: moved(e) for n, e in self.creditors.items()})

    @classmethod
    def load(cls, directory: Path | str) -> CreditorConfig:
        return load_creditor_config(Path(directory) / FILE_NAME)


def load_creditor_config(path: Path | str) -> CreditorConfig:
    return parse_creditor_config(read_yaml(path, CreditorConfigError), source=str(path))


def parse_creditor_config(raw: Any, source: str = FILE_NAME) -> CreditorConfig:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise CreditorConfigError(f"{source}: expected a mapping with default and creditors, "
                                  f"got {type(raw).__name__}")
    for key in raw:
        if key not in ("default", "creditors"):
            problems.append(f"{key}: unknown key; expected default or creditors")

    default = _entry(raw.get("default"), "default", None, problems)
    creditors_raw = raw.get("creditors") or {}
    creditors: dict[str, CreditorEndpoint] = {}
    if not isinstance(creditors_raw, dict):
        problems.append("creditors: expected a mapping of creditor name -> entry")
        creditors_raw = {}
    for name, entry in creditors_raw.items():
        if not isinstance(name, str) or not name.strip():
            problems.append(f"creditors: {name!r} is not a creditor name")
            continue
        creditors[name] = _entry(entry, f"creditors.{name}", default, problems)

    if problems:
        raise CreditorConfigError("\n".join(f"{source}: {problem}" for problem in problems))
    return CreditorConfig(default, creditors)


def _entry(raw: Any, where: str, base: CreditorEndpoint | None,
           problems: list[str]) -> CreditorEndpoint:
    if raw is None and base is not None:
        return base
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping with events_url and secret_env")
        return CreditorEndpoint(None, None)
    for key in raw:
        if key not in _ENTRY_KEYS:
            problems.append(f"{where}.{key}: unknown key; "
                            f"expected one of {', '.join(_ENTRY_KEYS)}")
    # A key left out comes from the default; a key given (even as null) wins.
    url = raw.get("events_url", base.events_url if base else None)
    secret_env = raw.get("secret_env", base.secret_env if base else None)
    if url is not None and not _is_http_url(url):
        problems.append(f"{where}.events_url: expected an http(s) URL or null, got {url!r}")
        url = None
    if secret_env is not None and not (isinstance(secret_env, str) and _ENV_NAME.match(secret_env)):
        problems.append(f"{where}.secret_env: expected an environment variable name like "
                        f"NUDGE_CREDITOR_WEBHOOK_SECRET, got {secret_env!r}")
        secret_env = None
    elif url is not None and secret_env is None:
        # Unsigned events would let anyone who learns the URL forge them; refuse at load.
        problems.append(f"{where}.secret_env: required when events_url is set")
    return CreditorEndpoint(url, secret_env)


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
