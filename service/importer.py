"""Import a debtor portfolio (CSV or JSON) into the debtor store.

Steps: :func:`load_records` reads the file, :func:`validate_records` checks every
record (all problems of all rows are collected, none stops the check early), and
:func:`import_file` upserts the debtors into the store and reports what happened.

* CSV: UTF-8 with or without BOM, a header row naming the columns (see
  ``bot.core.debtors.COLUMNS``; ``phone``, ``email``, ``age_band`` and ``segment`` may
  be left out). Row numbers are counted as in the file: the header is row 1.
* JSON: a list of objects, or ``{"debtors": [...]}``. The first object is row 1;
  fields are reported as a path, e.g. ``debtors[0].phone``. Numbers are read as
  Decimal, never float.
* Columns whose name starts with ``x_`` are the sender's own notes: ignored. Any
  other unknown column is an error.
* All or nothing: a file with any bad row imports nothing, unless
  ``skip_bad_rows=True``; then the good rows are imported and the bad ones reported.
  Problems with the file itself (unreadable, bad header) always import nothing.
* Re-importing is an idempotent upsert: same content -> ``unchanged``.

Command line: ``python -m service.importer FILE [--redis-url URL] [--skip-bad-rows]
[--as-of YYYY-MM-DD] [--dry-run]``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from bot.core.debtors import (
    COLUMNS,
    REQUIRED_COLUMNS,
    Debtor,
    FieldError,
    parse_debtor,
)
from service.debtor_store import AddressInUseError

if TYPE_CHECKING:  # pragma: no cover
    from service.debtor_store import RedisDebtorStore

#: ``FieldError.field`` values of problems with the file as a whole (never skippable).
FILE_LEVEL_FIELDS = frozenset({"file", "columns"})
EXTRA_COLUMN_PREFIX = "x_"
MAX_FILE_BYTES = 50 * 1024 * 1024


class ImportFileError(ValueError):
    """The file cannot be read as a portfolio at all; ``errors`` say why."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class Records(list):  # type: ignore[type-arg]
    """A ``list[dict]`` of raw records that remembers where each came from.

    ``rows[i]`` is the row number reported for record ``i``; ``kind`` is ``csv`` or
    ``json``; ``columns`` the CSV header (on row ``header_row``); ``json_root`` is ``"debtors"`` when the JSON
    file wrapped its list in ``{"debtors": [...]}``.
    """

    def __init__(
        self,
        records: Iterable[dict[str, Any]] = (),
        *,
        kind: Literal["csv", "json"] = "csv",
        rows: list[int] | None = None,
        columns: tuple[str, ...] | None = None,
        header_row: int = 1,
        json_root: str | None = None,
    ) -> None:
        super().__init__(records)
        self.kind = kind
        first = 2 if kind == "csv" else 1
        self.rows = rows if rows is not None else [first + i for i in range(len(self))]
        self.columns = columns
        self.header_row = header_row
        self.json_root = json_root


@dataclass
class ImportReport:
    """What one import did. ``skipped`` counts rows not imported (all of them when the
    file was rejected); ``rejected`` is True when nothing was imported because of errors."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[FieldError] = field(default_factory=list)
    rejected: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    def summary(self) -> str:
        head = (
            f"created {self.created}, updated {self.updated}, unchanged {self.unchanged}, "
            f"skipped {self.skipped}"
        )
        if self.rejected:
            head = f"nothing imported ({len(self.errors)} problem(s)); " + head
        lines = [head] + [f"  {e}" for e in self.errors]
        return "\n".join(lines)


# --- loading -----------------------------------------------------------------------


def load_records(path: str | Path) -> Records:
    """Read a CSV or JSON portfolio into raw records (``list[dict]``, see :class:`Records`).

    The format is taken from the extension (``.json`` -> JSON, anything else CSV; a
    file starting with ``[`` or ``{`` is JSON too). Raises :class:`ImportFileError`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ImportFileError(
                [FieldError(0, "file", f"file: {path.name} is {size} bytes; the limit is {MAX_FILE_BYTES}")]
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(
            [FieldError(0, "file", f"file: cannot read {path}: {exc.strerror or exc}")]
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(
            [
                FieldError(
                    line,
                    "file",
                    f"file: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                    "save the file as UTF-8 (in Excel: 'CSV UTF-8')",
                )
            ]
        ) from exc
    if path.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        return _parse_json(text)
    return _parse_csv(text)


def _parse_csv(text: str) -> Records:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # leading blank lines
        if header is None:
            raise ImportFileError([FieldError(1, "file", "file: is empty; expected a header row")])
        header_row = reader.line_num
        columns = tuple(cell.strip().lower() for cell in header)
        problems: list[FieldError] = []
        nameless = [str(i + 1) for i, name in enumerate(columns) if not name]
        if nameless:
            problems.append(
                FieldError(header_row, "columns", f"columns: column(s) {', '.join(nameless)} have no name")
            )
        doubled = sorted({c for c in columns if c and columns.count(c) > 1})
        if doubled:
            problems.append(
                FieldError(header_row, "columns", f"columns: appear more than once: {', '.join(doubled)}")
            )
        if problems:
            raise ImportFileError(problems)

        records: list[dict[str, Any]] = []
        rows: list[int] = []
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            record: dict[str, Any] = dict(zip(columns, cells))
            if len(cells) != len(columns):
                record = {
                    "__bad_shape__": FieldError(
                        start,
                        "values",
                        f"values: the row has {len(cells)} values but the header has "
                        f"{len(columns)} columns (a missing or extra comma?)",
                    )
                }
            records.append(record)
            rows.append(start)
    except csv.Error as exc:
        raise ImportFileError(
            [FieldError(reader.line_num, "file", f"file: line {reader.line_num} cannot be read as CSV ({exc})")]
        ) from exc
    return Records(records, kind="csv", rows=rows, columns=columns, header_row=header_row)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _pairs_no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice in one object")
        result[key] = value
    return result


def _parse_json(text: str) -> Records:
    try:
        data = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_reject_constant,
            object_pairs_hook=_pairs_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise ImportFileError(
            [FieldError(exc.lineno, "file", f"file: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from exc
    except ValueError as exc:
        raise ImportFileError([FieldError(0, "file", f"file: not valid JSON: {exc}")]) from exc

    root: str | None = None
    if isinstance(data, dict):
        extra = sorted(set(data) - {"debtors"})
        if "debtors" not in data or extra:
            what = f"unexpected key(s) {', '.join(map(repr, extra))}; " if extra else ""
            raise ImportFileError(
                [FieldError(0, "file", f'file: {what}expected a list of debtors or {{"debtors": [...]}}')]
            )
        data, root = data["debtors"], "debtors"
    if not isinstance(data, list):
        raise ImportFileError(
            [FieldError(0, "file", 'file: expected a list of debtors or {"debtors": [...]}')]
        )
    records: list[dict[str, Any]] = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            records.append({str(k).strip().lower(): v for k, v in item.items()})
        else:
            path = f"{root or ''}[{i}]"
            records.append(
                {"__bad_shape__": FieldError(i + 1, path, f"{path}: is {_json_kind(item)}, not an object with the debtor's fields")}
            )
    return Records(records, kind="json", json_root=root)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# --- validation --------------------------------------------------------------------


def check_columns(
    columns: Iterable[str], *, row: int, field_name: str = "columns", noun: str = "column"
) -> list[FieldError]:
    """Missing required and unknown columns, each kind as one clear error."""
    present = set(columns)
    problems: list[FieldError] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        problems.append(
            FieldError(row, field_name, f"{field_name}: missing required {noun}(s): {', '.join(missing)}")
        )
    unknown = sorted(c for c in present if c not in COLUMNS and not c.startswith(EXTRA_COLUMN_PREFIX))
    if unknown:
        problems.append(
            FieldError(
                row,
                field_name,
                f"{field_name}: unknown {noun}(s): {', '.join(unknown)}. Known {noun}s: "
                f"{', '.join(COLUMNS)}; name your own {noun}s x_... to have them ignored",
            )
        )
    return problems


def validate_records(
    records: list[dict[str, Any]], as_of: date
) -> tuple[list[Debtor], list[FieldError]]:
    """Validate every record; return the good debtors and all problems found.

    ``records`` is what :func:`load_records` returned (it knows the row numbers); a
    plain list of dicts is numbered like CSV rows (first record = row 2). A duplicate
    id makes every row using it bad. For CSV, header problems are reported once
    (row 1, field ``columns``) and the rows are then not checked one by one.
    """
    meta = records if isinstance(records, Records) else Records(records)
    errors: list[FieldError] = []

    if meta.kind == "csv":
        columns = meta.columns
        if columns is None and records:  # a plain list: judge by the keys it uses
            columns = tuple(dict.fromkeys(k for r in records for k in r if k != "__bad_shape__"))
        header = check_columns(columns, row=meta.header_row) if columns is not None else []
        if header:
            return [], header

    parsed: list[tuple[int, Debtor]] = []
    for index, (raw, row) in enumerate(zip(meta, meta.rows)):
        bad_shape = raw.get("__bad_shape__")
        if isinstance(bad_shape, FieldError):
            errors.append(bad_shape)
            continue
        record_errors: list[FieldError] = []
        missing: set[str] = set()
        if meta.kind == "json":
            path = f"{meta.json_root or ''}[{index}]"
            record_errors += check_columns(raw.keys(), row=row, field_name=path, noun="field")
            missing = {c for c in REQUIRED_COLUMNS if c not in raw}
        result = parse_debtor(
            {k: v for k, v in raw.items() if not k.startswith(EXTRA_COLUMN_PREFIX)}, as_of=as_of, row=row
        )
        if isinstance(result, Debtor):
            if not record_errors:
                parsed.append((row, result))
        else:
            # a missing field was already named once; don't also call it empty
            record_errors += [e for e in result if e.field not in missing]
        errors += record_errors

    errors += _duplicates(meta, parsed)
    if meta.kind == "json":
        index_of = {row: i for i, row in enumerate(meta.rows)}
        errors = [_json_path(e, index_of.get(e.row, e.row - 1), meta.json_root) for e in errors]
    bad_rows = {e.row for e in errors}
    good = [debtor for row, debtor in parsed if row not in bad_rows]
    errors.sort(key=lambda e: e.row)
    return good, errors


def _json_path(error: FieldError, index: int, root: str | None) -> FieldError:
    prefix = f"{root or ''}[{index}]"
    if error.field.startswith(prefix):
        return error
    path = f"{prefix}.{error.field}"
    message = error.message
    if message.startswith(f"{error.field}:"):
        message = path + message[len(error.field) :]
    return FieldError(error.row, path, message)


def _duplicates(meta: Records, parsed: list[tuple[int, Debtor]]) -> list[FieldError]:
    """Ids used by more than one record, and phones/emails shared by different debtors."""
    problems: list[FieldError] = []
    rows_by_id: dict[str, list[int]] = defaultdict(list)
    for raw, row in zip(meta, meta.rows):
        value = raw.get("id")
        if isinstance(value, str) and value.strip():
            rows_by_id[value.strip()].append(row)
    for debtor_id, rows in rows_by_id.items():
        if len(rows) > 1:
            for row in rows:
                others = ", ".join(str(r) for r in rows if r != row)
                problems.append(
                    FieldError(row, "id", f"id: {debtor_id!r} is also used on row {others}; ids must be unique")
                )
    duplicate_rows = {e.row for e in problems}

    owners: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for row, debtor in parsed:
        if row in duplicate_rows:
            continue
        for kind, address in debtor.addresses().items():
            owners[(kind, address)].append((row, debtor.id))
    for (kind, address), users in owners.items():
        if len({debtor_id for _, debtor_id in users}) > 1:
            for row, debtor_id in users:
                others = ", ".join(f"{d} (row {r})" for r, d in users if r != row)
                problems.append(
                    FieldError(
                        row,
                        kind,
                        f"{kind}: {address} is also given for {others}; "
                        "one address can only belong to one debtor",
                    )
                )
    return problems


# --- importing ---------------------------------------------------------------------


async def import_file(
    path: str | Path,
    store: RedisDebtorStore,
    *,
    skip_bad_rows: bool = False,
    as_of: date | None = None,
) -> ImportReport:
    """Validate the file and upsert its debtors into ``store``; see the module doc."""
    as_of = as_of or date.today()
    try:
        records = load_records(path)
    except ImportFileError as exc:
        return ImportReport(errors=list(exc.errors), rejected=True)

    debtors, errors = validate_records(records, as_of)
    row_of = _rows_by_id(records)
    errors += await _store_conflicts(store, debtors, row_of)
    errors.sort(key=lambda e: e.row)
    bad_rows = {e.row for e in errors}
    file_level = any(e.field in FILE_LEVEL_FIELDS for e in errors)

    if errors and (file_level or not skip_bad_rows):
        return ImportReport(skipped=len(records), errors=errors, rejected=True)

    report = ImportReport(skipped=len(bad_rows), errors=errors)
    batch = [d for d in debtors if row_of.get(d.id) not in bad_rows]
    # Validation guarantees no two debtors of this file share an address, so an
    # address held by another debtor of this batch is being given up by it: it may
    # be taken over (this is what lets two debtors swap numbers in one file).
    batch_ids = frozenset(d.id for d in batch)
    for debtor in batch:
        try:
            outcome = await store.upsert(debtor, take_over_from=batch_ids - {debtor.id})
        except AddressInUseError as exc:  # another writer took it since the check
            report.errors.append(FieldError(row_of.get(debtor.id, 0), exc.kind, f"{exc.kind}: {exc}"))
            report.skipped += 1
            continue
        if outcome == "created":
            report.created += 1
        elif outcome == "updated":
            report.updated += 1
        else:
            report.unchanged += 1
    report.errors.sort(key=lambda e: e.row)
    return report


def _rows_by_id(records: list[dict[str, Any]]) -> dict[str, int]:
    meta = records if isinstance(records, Records) else Records(records)
    found: dict[str, int] = {}
    for raw, row in zip(meta, meta.rows):
        value = raw.get("id")
        if isinstance(value, str):
            found.setdefault(value.strip(), row)
    return found


async def _store_conflicts(
    store: RedisDebtorStore, debtors: list[Debtor], row_of: dict[str, int]
) -> list[FieldError]:
    """Addresses this file gives a debtor that the store already gives another debtor.

    Not a conflict when the file also moves the other debtor off that address.
    """
    owner_lookup = getattr(store, "address_owner", None)
    if owner_lookup is None:
        return []
    in_file = {d.id: d for d in debtors}
    problems: list[FieldError] = []
    for debtor in debtors:
        for kind, address in debtor.addresses().items():
            owner = await owner_lookup(kind, address)
            if owner is None or owner == debtor.id:
                continue
            moved_off = owner in in_file and in_file[owner].addresses().get(kind) != address
            if moved_off:
                continue
            problems.append(
                FieldError(
                    row_of.get(debtor.id, 0),
                    kind,
                    f"{kind}: {address} already belongs to debtor {owner}; "
                    "one address can only belong to one debtor",
                )
            )
    return problems


# --- command line ------------------------------------------------------------------
