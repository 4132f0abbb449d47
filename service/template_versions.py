"""Versions of the message templates, four-eyes approval, rollback, and the live overlay.

Every file ``message_templates/<lang>/*.j2`` (partials included) can be edited in the console.
Version 0 of a file is the file on disk; each edit is a new numbered version:

    propose   a manager's draft, checked first (service/template_preview.check_draft in a
              child process: lint, then renders of everything it affects within the sandbox's
              limits); refused with every error, nothing stored; warnings kept with it
    approve   by another person (four eyes: never the author), only while pending and only if
              the live version is still the one the draft was based on; checked again; then
              live at once: the text goes into ``template_overrides``, ``template_live`` points
              at it and ``template_generation`` moves, in one MULTI/EXEC
    reject    by a reviewer, or withdrawn by its author
    rollback  to any version that was live before, or to 0 (the file): immediate, since two
              people approved that text already; recorded as a new version

Live without restart: every renderer consults ``template_overrides`` before the files and
reloads it when the generation counter moved (``TemplateRenderer.refresh_live``, called by the
send path before each render).

Statuses: pending -> live | rejected; live -> superseded (another version approved) |
rolled_back (a rollback replaced it). A pending version whose base is no longer live is
*stale*: it cannot be approved; its author proposes again on the new text.

Every state change is in the audit log (names, numbers, people; never template text).
"""

from __future__ import annotations

import difflib
import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from service.audit import AuditLog
from service.channel_config import ChannelConfig
from service.keys import Keys
from service.template_lint import Catalogue, LintIssue, default_catalogue
from service.template_preview import (
    DraftReport,
    TemplateName,
    UnknownTemplate,
    check_draft,
    template_files,
)
from service.template_sandbox import MAX_SOURCE, run_isolated_async
from service.templates import TONES

__all__ = [
    "DraftRefused",
    "FourEyesError",
    "TemplateVersionError",
    "TemplateVersions",
    "UnknownTemplate",
    "UnknownVersion",
    "Version",
    "VersionStateError",
    "whatsapp_templates",
]

#: How long the check of a draft may take (it renders every file the draft affects).
CHECK_SECONDS = 15.0
MAX_NOTE = 500


class TemplateVersionError(Exception):
    """Something about template versions the person asking must be told (mapped to HTTP at
    the console's edge)."""


class UnknownVersion(TemplateVersionError, LookupError):
    pass


class DraftRefused(TemplateVersionError):
    """The draft has errors; ``issues`` lists every one."""

    def __init__(self, message: str, issues: Sequence[LintIssue]) -> None:
        super().__init__(message + ": " + "; ".join(str(issue) for issue in issues))
        self.issues = tuple(issues)


class FourEyesError(TemplateVersionError):
    """An author tried to approve their own edit."""


class VersionStateError(TemplateVersionError):
    """Not possible in the version's state (not pending, stale, not a rollback target...)."""


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    text: str
    author: str
    note: str
    created: float
    status: str                      # file | pending | live | rejected | superseded | rolled_back
    based_on: int = 0                # the live version when the draft was written
    kind: str = "edit"               # edit | rollback | file
    rollback_of: int | None = None   # a rollback: the version it brought back
    warnings: tuple[str, ...] = ()
    decided_by: str | None = None
    decided_at: float | None = None
    reason: str = ""                 # a rejection's reason
    live_from: float | None = None
    live_until: float | None = None
    stale: bool = False              # pending, but its base is no longer live

    def to_json(self) -> str:
        data = asdict(self)
        for computed in ("name", "number", "stale"):
            data.pop(computed)
        return json.dumps(data)

    @classmethod
    def from_json(cls, name: str, number: int, raw: str | bytes) -> Version:
        data = json.loads(raw)
        data["warnings"] = tuple(data.get("warnings") or ())
        return cls(name=name, number=number, **data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return data

    @property
    def was_live(self) -> bool:
        return self.live_from is not None or self.kind == "file"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TemplateVersions:
    """The versions of every template file, in Redis; the files themselves are never written."""

    def __init__(self, redis: Redis, keys: Keys, root: Path, *, catalogue: Catalogue | None = None,
                 audit: AuditLog | None = None, company_name: str = "Nudge Collections",
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.redis = redis
        self.keys = keys
        self.root = Path(root)
        self.catalogue = catalogue if catalogue is not None else default_catalogue(self.root)
        self.audit = audit
        self.company_name = company_name
        self.check_seconds = check_seconds

    # --- names and texts --------------------------------------------------------------
    def names(self) -> list[str]:
        return template_files(self.root)

    def parse(self, name: str) -> TemplateName:
        """The name's parts; :class:`UnknownTemplate` unless it is an existing template file."""
        parsed = TemplateName.parse(name)
        if not (self.root / name).is_file():
            raise UnknownTemplate(f"no template {name!r}")
        return parsed

    def file_text(self, name: str) -> str:
        self.parse(name)
        return (self.root / name).read_text(encoding="utf-8")

    async def overlay(self) -> dict[str, str]:
        """The live versions' texts (name -> text) that replace files."""
        raw = await self.redis.hgetall(self.keys.template_overrides)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def live_numbers(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.template_live)
        return {_text(k): int(v) for k, v in raw.items()}

    async def live_number(self, name: str) -> int:
        return int(await self.redis.hget(self.keys.template_live, name) or 0)

    async def live_text(self, name: str) -> str:
        text = await self.redis.hget(self.keys.template_overrides, name)
        return _text(text) if text is not None else self.file_text(name)

    async def pending_names(self) -> set[str]:
        return {_text(n) for n in await self.redis.smembers(self.keys.template_pending)}

    # --- reading versions ------------------------------------------------------------
    async def history(self, name: str) -> list[Version]:
        """Version 0 (the file) and every stored version, oldest first."""
        self.parse(name)
        raw = await self.redis.hgetall(self.keys.template_versions(name))
        live = await self.live_number(name)
        versions = [self._file_version(name, live)]
        for number, data in sorted(((int(k), v) for k, v in raw.items())):
            version = Version.from_json(name, number, data)
            if version.status == "pending" and version.based_on != live:
                version = replace(version, stale=True)
            versions.append(version)
        return versions

    async def version(self, name: str, number: int) -> Version:
        self.parse(name)
        if number == 0:
            return self._file_version(name, await self.live_number(name))
        raw = await self.redis.hget(self.keys.template_versions(name), str(number))
        if raw is None:
            raise UnknownVersion(f"{name} has no version {number}")
        version = Version.from_json(name, number, raw)
        if version.status == "pending" and version.based_on != await self.live_number(name):
            version = replace(version, stale=True)
        return version

    def _file_version(self, name: str, live: int) -> Version:
        return Version(name, 0, self.file_text(name), "file", "the file in message_templates/",
                       0.0, "live" if live == 0 else "file", kind="file")

    async def diff(self, name: str, a: int, b: int) -> str:
        """Unified diff from version ``a`` to version ``b``."""
        old, new = await self.version(name, a), await self.version(name, b)
        return "".join(difflib.unified_diff(
            old.text.splitlines(keepends=True), new.text.splitlines(keepends=True),
            fromfile=f"{name} v{a}", tofile=f"{name} v{b}"))

    # --- checking ----------------------------------------------------------------------
    async def check(self, name: str, text: str, *, overlay: Mapping[str, str] | None = None) -> DraftReport:
        """:func:`check_draft` of ``text`` against the live versions, in a child process."""
        self.parse(name)
        if not isinstance(text, str):
            raise DraftRefused("the text must be a string", ())
        if len(text) > MAX_SOURCE:
            raise DraftRefused("too long", (LintIssue("error", "size", f"{len(text)} characters; "
                                                      f"at most {MAX_SOURCE}", name),))
        texts = dict(overlay) if overlay is not None else await self.overlay()
        return await run_isolated_async(
            functools.partial(check_draft, company=self.company_name),
            self.root, self.catalogue, texts, name, text, timeout=self.check_seconds)

    # --- changing --------------------------------------------------------------------
    async def propose(self, name: str, text: str, author: str, note: str = "") -> Version:
        """Store a checked draft as a pending version. :class:`DraftRefused` lists the errors."""
        self.parse(name)
        if not author:
            raise TemplateVersionError("an author is required")
        note = str(note or "").strip()
        if len(note) > MAX_NOTE:
            raise TemplateVersionError(f"the note is {len(note)} characters; at most {MAX_NOTE}")
        based_on = await self.live_number(name)
        if text == await self.live_text(name):
            raise DraftRefused("nothing to propose", (LintIssue(
                "error", "unchanged", "the text is the live text", name),))
        report = await self.check(name, text)
        if report.errors:
            raise DraftRefused(f"{name}: the draft has {len(report.errors)} error(s)", report.errors)
        version = Version(name, 0, text, author, note, time.time(), "pending", based_on=based_on,
                          warnings=tuple(str(w) for w in report.warnings))
        number = await self._append(name, version, pending=True)
        await self._audit(author, "template.propose", template=name, version=number,
                          based_on=based_on, warnings=len(version.warnings))
        return replace(version, number=number)

    async def approve(self, name: str, number: int, approver: str) -> Version:
        """Make a pending version live (someone else's; checked again on the current texts)."""
        version = await self.version(name, number)
        if version.status != "pending":
            raise VersionStateError(f"version {number} of {name} is {version.status}, not pending")
        if approver == version.author:
            await self._audit(approver, "template.approve_refused", template=name, version=number,
                              reason="own_edit")
            raise FourEyesError("four eyes: you cannot approve your own edit")
        if version.stale:
            raise VersionStateError(
                f"version {number} was written on version {version.based_on}, but version "
                f"{await self.live_number(name)} is live now: propose it again on the live text")
        report = await self.check(name, version.text)
        if report.errors:
            raise DraftRefused(f"{name} v{number} no longer passes the checks", report.errors)
        now = time.time()
        live = replace(version, status="live", decided_by=approver, decided_at=now, live_from=now)
        await self._make_live(name, live, expected_live=version.based_on, replaced="superseded",
                              by=approver, pending=number)
        await self._audit(approver, "template.approve", template=name, version=number,
                          author=version.author)
        return live

    async def reject(self, name: str, number: int, by: str, reason: str = "") -> Version:
        """Close a pending version without making it live (its author may withdraw it)."""
        version = await self.version(name, number)
        if version.status != "pending":
            raise VersionStateError(f"version {number} of {name} is {version.status}, not pending")
        reason = str(reason or "").strip()[:MAX_NOTE]
        rejected = replace(version, status="rejected", decided_by=by, decided_at=time.time(),
                           reason=reason, stale=False)
        key = self.keys.template_versions(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key)
                current = await pipe.hget(key, str(number))
                if current is None or Version.from_json(name, number, current).status != "pending":
                    raise VersionStateError(f"version {number} of {name} was decided meanwhile")
                others = await self._other_pending(pipe, key, name, number)
                pipe.multi()
                pipe.hset(key, str(number), rejected.to_json())
                if not others:
                    pipe.srem(self.keys.template_pending, name)
                await pipe.execute()
            except WatchError:
                raise VersionStateError(f"{name} changed meanwhile: try again") from None
        await self._audit(by, "template.withdraw" if by == version.author else "template.reject",
                          template=name, version=number, author=version.author)
        return rejected

    async def rollback(self, name: str, to_number: int, by: str, note: str = "") -> Version:
        """Bring back a version that was live before (or 0, the file), at once, as a new
        version. No second approval: that text was approved by two people already."""
        target = await self.version(name, to_number)
        live = await self.live_number(name)
        current = await self.version(name, live)
        # the file: version 0, or a version that was itself a rollback to the file
        to_file = to_number == 0 or target.rollback_of == 0
        if to_number == live or (to_file and (live == 0 or current.rollback_of == 0)):
            raise VersionStateError(f"version {to_number} of {name} is live already")
        if not target.was_live:
            raise VersionStateError(f"version {to_number} of {name} was never live: only a "
                                    "version that was live before can be rolled back to")
        now = time.time()
        text = self.file_text(name) if to_file else target.text
        version = Version(name, 0, text, by, str(note or "")[:MAX_NOTE], now, "live",
                          based_on=live, kind="rollback", rollback_of=0 if to_file else to_number,
                          decided_by=by, decided_at=now, live_from=now)
        number = await self._make_live(name, version, expected_live=live, replaced="rolled_back",
                                       by=by, pending=None)
        await self._audit(by, "template.rollback", template=name, version=number,
                          to_version=to_number, from_version=live)
        return replace(version, number=number)

    # --- storage -----------------------------------------------------------------------
    async def _append(self, name: str, version: Version, *, pending: bool) -> int:
        """Store a new version under the next number (numbers are never reused)."""
        key = self.keys.template_versions(name)
        while True:
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    number = await pipe.hlen(key) + 1
                    pipe.multi()
                    pipe.hset(key, str(number), version.to_json())
                    if pending:
                        pipe.sadd(self.keys.template_pending, name)
                    await pipe.execute()
                    return number
                except WatchError:
                    continue

    async def _make_live(self, name: str, version: Version, *, expected_live: int, replaced: str,
                         by: str, pending: int | None) -> int:
        """One MULTI/EXEC: the version stored as live, the one it replaces closed, the override
        set (or removed for the file), the live number and the generation moved. Refused if the
        live version or the version itself changed since they were read."""
        key = self.keys.template_versions(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(key, self.keys.template_live)
                live = int(await pipe.hget(self.keys.template_live, name) or 0)
                if live != expected_live:
                    raise VersionStateError(f"the live version of {name} changed meanwhile "
                                            f"(now {live}): reload and try again")
                if pending is not None:
                    current = await pipe.hget(key, str(pending))
                    if current is None or Version.from_json(name, pending, current).status != "pending":
                        raise VersionStateError(f"version {pending} of {name} was decided meanwhile")
                    number = pending
                else:
                    number = await pipe.hlen(key) + 1
                old = await pipe.hget(key, str(live)) if live else None
                others = await self._other_pending(pipe, key, name, number)
                pipe.multi()
                pipe.hset(key, str(number), replace(version, stale=False).to_json())
                if old is not None:
                    closed = replace(Version.from_json(name, live, old), status=replaced,
                                     live_until=version.live_from)
                    pipe.hset(key, str(live), closed.to_json())
                if version.kind == "rollback" and version.rollback_of == 0:
                    pipe.hdel(self.keys.template_overrides, name)  # the file is live again
                else:
                    pipe.hset(self.keys.template_overrides, name, version.text)
                pipe.hset(self.keys.template_live, name, number)
                pipe.incr(self.keys.template_generation)
                if not others:
                    pipe.srem(self.keys.template_pending, name)
                await pipe.execute()
                return number
            except WatchError:
                raise VersionStateError(f"{name} changed meanwhile: reload and try again") from None

    @staticmethod
    async def _other_pending(pipe: Any, key: str, name: str, number: int) -> bool:
        rows = await pipe.hgetall(key)
        return any(int(k) != number and Version.from_json(name, int(k), v).status == "pending"
                   for k, v in rows.items())

    async def _audit(self, actor: str, action: str, **detail: Any) -> None:
        if self.audit is not None:
            await self.audit.record(actor, action, **detail)


# --------------------------------------------------------------------------- WhatsApp


def whatsapp_templates(config: ChannelConfig, name: TemplateName) -> list[dict[str, Any]]:
    """The approved WhatsApp templates (policies/channels.yml) a file's messages use outside
    the 24-hour window, per tone: the Content SID for the file's language, its placeholders and
    buttons. Empty for partials and for files that never go out on WhatsApp."""
    if name.partial or name.channel not in (None, "whatsapp"):
        return []
    rows = []
    for tone in ([name.tone] if name.tone else list(TONES)):
        wa_key = f"{name.key}.{tone}"
        if wa_key not in config.content_templates:
            wa_key = str(name.key)  # the sender falls back to the key's own (service/sending.py)
        spec = config.content_templates.get(wa_key)
        if spec is None:
            continue
        rows.append({"tone": tone, "content_template": wa_key,
                     "content_sid": spec.sids.get(name.language),
                     "variables": dict(spec.variables), "buttons": list(spec.buttons)})
    return rows
