from __future__ import annotations

import csv
import io
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from bot.core.debtors import COLUMNS
from service.debtor_store import RedisDebtorStore
from service.importer import (
    ImportFileError,
    import_file,
    load_records,
    validate_records,
)
from service.keys import Keys

AS_OF = date(2026, 11, 22)
ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo_portfolio.csv"
FIXTURES = Path(__file__).parent / "fixtures"


def demo_rows() -> list[dict[str, str]]:
    with DEMO.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def write_csv(
    path: Path, rows: list[dict[str, str]], *, columns: tuple[str, ...] = COLUMNS, bom: bool = False
) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(("\ufeff" if bom else "") + buf.getvalue(), encoding="utf-8")
    return path


@pytest_asyncio.fixture
async def store(redis_server_url: str) -> AsyncIterator[RedisDebtorStore]:
    client = aioredis.Redis.from_url(redis_server_url)
    await client.flushdb()
    try:
        yield RedisDebtorStore(client, Keys(prefix=f"t{uuid.uuid4().hex[:8]}"))
    finally:
        await client.aclose()


# --- the demo portfolio ---------------------------------------------------------------


def test_demo_portfolio_validates_completely() -> None:
    records = load_records(DEMO)
    debtors, errors = validate_records(records, AS_OF)
    assert errors == []
    assert len(debtors) == len(records) == 51
    ids = [d.id for d in debtors]
    assert len(set(ids)) == len(ids)
    by_id = {d.id: d for d in debtors}

    langs = Counter(d.language for d in debtors)
    assert langs == {"en": 17, "nl": 17, "de": 17}
    assert {d.country for d in debtors if d.language == "en"} == {"GB", "IE"}
    assert {d.country for d in debtors if d.language == "nl"} == {"NL"}
    assert {d.country for d in debtors if d.language == "de"} == {"DE"}
    for d in debtors:
        assert d.currency == ("GBP" if d.country == "GB" else "EUR")
        assert d.id.startswith(f"D-{d.language.upper()}-")
        assert d.email is None or d.email.rsplit("@", 1)[1] in {"example.com", "example.org", "example.net"}
        assert Decimal("35.00") <= d.balance <= Decimal("4800.00")
        assert 5 <= d.days_past_due(AS_OF) <= 200
    dpd = [d.days_past_due(AS_OF) for d in debtors]
    assert min(dpd) == 5 and max(dpd) == 200
    assert min(d.balance for d in debtors) == Decimal("35.00")
    assert max(d.balance for d in debtors) == Decimal("4800.00")
    assert {d.age_band for d in debtors} == {"18-25", "26-40", "41-65", "65+"}
    assert {d.product for d in debtors} >= {"telecom", "energy", "retail", "loan"}
    assert {d.payment_history for d in debtors} == {"good", "late", "none", "broken_promise"}
    for lang in ("en", "nl", "de"):
        assert {d.preferred_channel for d in debtors if d.language == lang} == {"sms", "whatsapp", "email"}
    whatsapp = [d for d in debtors if d.preferred_channel == "whatsapp"]
    assert sum(d.whatsapp_opt_in for d in whatsapp) > len(whatsapp) / 2

    en, nl, de = by_id["D-EN-001"], by_id["D-NL-001"], by_id["D-DE-001"]
    assert (en.country, en.preferred_channel, en.phone is not None) == ("GB", "sms", True)
    assert (nl.country, nl.preferred_channel, nl.whatsapp_opt_in) == ("NL", "whatsapp", True)
    assert (de.country, de.preferred_channel, de.email is not None) == ("DE", "email", True)


@pytest.mark.asyncio
async def test_demo_import_then_reimport_is_unchanged(store: RedisDebtorStore) -> None:
    first = await import_file(DEMO, store, as_of=AS_OF)
    assert (first.created, first.updated, first.unchanged, first.skipped) == (51, 0, 0, 0)
    assert first.errors == [] and first.ok and not first.rejected
    assert len(await store.all_ids()) == 51

    second = await import_file(DEMO, store, as_of=AS_OF)
    assert (second.created, second.updated, second.unchanged, second.skipped) == (0, 0, 51, 0)

    d = await store.find_by_address("phone", "+447400123001")
    assert d is not None and d.id == "D-EN-001"


# --- all or nothing -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bad_file_imports_nothing(store: RedisDebtorStore) -> None:
    report = await import_file(FIXTURES / "bad_rows.csv", store, as_of=AS_OF)
    assert report.rejected and not report.ok
    assert (report.created, report.updated, report.unchanged, report.skipped) == (0, 0, 0, 4)
    assert [(e.row, e.field) for e in report.errors] == [(3, "phone"), (4, "balance")]
    assert "phone: '+31 6 123' is not a valid number for NL" in report.errors[0].message
    assert "uses a comma" in report.errors[1].message
    assert str(report.errors[0]).startswith("row 3: phone:")
    assert await store.all_ids() == []
    assert "nothing imported" in report.summary()


@pytest.mark.asyncio
async def test_skip_bad_rows_imports_the_good_ones(store: RedisDebtorStore) -> None:
    report = await import_file(FIXTURES / "bad_rows.csv", store, as_of=AS_OF, skip_bad_rows=True)
    assert not report.rejected
    assert (report.created, report.skipped) == (2, 2)
    assert [(e.row, e.field) for e in report.errors] == [(3, "phone"), (4, "balance")]
    assert await store.all_ids() == ["D-T-001", "D-T-004"]


@pytest.mark.asyncio
async def test_change_detection(store: RedisDebtorStore, tmp_path: Path) -> None:
    await import_file(DEMO, store, as_of=AS_OF)
    rows = demo_rows()
    rows[0]["balance"] = "200.00"  # D-EN-001
    rows[20]["segment"] = "vip"
    report = await import_file(write_csv(tmp_path / "changed.csv", rows), store, as_of=AS_OF)
    assert (report.created, report.updated, report.unchanged) == (0, 2, 49)
    en = await store.get("D-EN-001")
    assert en is not None and en.balance == Decimal("200.00") and en.balance_minor == 20000


@pytest.mark.asyncio
async def test_reimport_with_new_debtor_creates_only_that_one(store: RedisDebtorStore, tmp_path: Path) -> None:
    rows = demo_rows()
    await import_file(write_csv(tmp_path / "a.csv", rows[:-1]), store, as_of=AS_OF)
    report = await import_file(write_csv(tmp_path / "b.csv", rows), store, as_of=AS_OF)
    assert (report.created, report.updated, report.unchanged) == (1, 0, 50)


@pytest.mark.asyncio
async def test_phone_change_moves_the_address_index(store: RedisDebtorStore, tmp_path: Path) -> None:
    rows = demo_rows()
    await import_file(write_csv(tmp_path / "a.csv", rows), store, as_of=AS_OF)
    assert rows[0]["id"] == "D-EN-001"
    rows[0]["phone"] = "07400 123099"
    report = await import_file(write_csv(tmp_path / "b.csv", rows), store, as_of=AS_OF)
    assert report.updated == 1
    assert await store.find_by_address("phone", "+447400123001") is None
    moved = await store.find_by_address("phone", "+447400123099")
    assert moved is not None and moved.id == "D-EN-001"


@pytest.mark.asyncio
async def test_phone_swapped_between_two_debtors_in_one_file(store: RedisDebtorStore, tmp_path: Path) -> None:
    rows = demo_rows()[:3]  # D-EN-001..003
    await import_file(write_csv(tmp_path / "a.csv", rows), store, as_of=AS_OF)
    assert rows[1]["phone"]
    rows[0]["phone"], rows[1]["phone"] = rows[1]["phone"], rows[0]["phone"]
    report = await import_file(write_csv(tmp_path / "b.csv", rows), store, as_of=AS_OF)
    assert report.errors == [] and report.updated == 2
    first = await store.find_by_address("phone", "+447400123001")
    assert first is not None and first.id == "D-EN-002"


@pytest.mark.asyncio
async def test_address_already_owned_by_another_debtor_in_the_store(
    store: RedisDebtorStore, tmp_path: Path
) -> None:
    rows = demo_rows()
    await import_file(write_csv(tmp_path / "a.csv", rows[:1]), store, as_of=AS_OF)
    newcomer = dict(rows[1], phone=rows[0]["phone"], email="")
    newcomer["preferred_channel"] = "sms"
    report = await import_file(write_csv(tmp_path / "b.csv", [newcomer]), store, as_of=AS_OF)
    assert report.rejected
    assert [(e.row, e.field) for e in report.errors] == [(2, "phone")]
    assert "already belongs to debtor D-EN-001" in report.errors[0].message
    assert await store.all_ids() == ["D-EN-001"]


# --- file shapes ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_csv_with_bom(store: RedisDebtorStore, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bom.csv", demo_rows()[:5], bom=True)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    records = load_records(path)
    assert "id" in records[0] and "\ufeffid" not in records[0]
    report = await import_file(path, store, as_of=AS_OF)
    assert report.created == 5 and report.errors == []


def test_csv_with_crlf_blank_lines_and_multiline_field(tmp_path: Path) -> None:
    rows = demo_rows()[:3]
    rows[1]["creditor"] = "Northwind\nMobile"  # quoted, spans lines 4-5; whitespace is folded
    rows[2]["language"] = "fr"  # starts on line 6
    path = write_csv(tmp_path / "x.csv", rows)
    text = path.read_text(encoding="utf-8").replace("\n", "\r\n")
    lines = text.split("\r\n")
    text = "\r\n".join(lines[:2] + [""] + lines[2:])  # blank line after the first debtor
    path.write_text(text, encoding="utf-8", newline="")
    records = load_records(path)
    assert records.rows == [2, 4, 6]
    debtors, errors = validate_records(records, AS_OF)
    assert [d.id for d in debtors] == ["D-EN-001", "D-EN-002"]
    assert debtors[1].creditor == "Northwind Mobile"
    assert [(e.row, e.field) for e in errors] == [(6, "language")]


def test_missing_required_columns_is_one_error() -> None:
    debtors, errors = validate_records(load_records(FIXTURES / "missing_columns.csv"), AS_OF)
    assert debtors == []
    assert len(errors) == 1
    (error,) = errors
    assert (error.row, error.field) == (1, "columns")
    assert error.message == "columns: missing required column(s): balance, currency"


@pytest.mark.asyncio
async def test_missing_columns_reject_even_with_skip_bad_rows(store: RedisDebtorStore) -> None:
    report = await import_file(FIXTURES / "missing_columns.csv", store, as_of=AS_OF, skip_bad_rows=True)
    assert report.rejected and report.skipped == 1
    assert await store.all_ids() == []


def test_unknown_columns_are_an_error_but_x_columns_are_ignored() -> None:
    debtors, errors = validate_records(load_records(FIXTURES / "unknown_columns.csv"), AS_OF)
    assert debtors == []
    assert [(e.row, e.field) for e in errors] == [(1, "columns")]
    assert "unknown column(s): notes." in errors[0].message
    assert "x_branch" not in errors[0].message


def test_x_columns_alone_are_fine(tmp_path: Path) -> None:
    rows = [dict(r, x_branch="Leeds") for r in demo_rows()[:2]]
    path = write_csv(tmp_path / "x.csv", rows, columns=COLUMNS + ("x_branch",))
    debtors, errors = validate_records(load_records(path), AS_OF)
    assert errors == [] and len(debtors) == 2


def test_optional_columns_may_be_left_out(tmp_path: Path) -> None:
    columns = tuple(c for c in COLUMNS if c not in {"phone", "age_band", "segment"})
    rows = [{k: v for k, v in r.items() if k in columns} for r in demo_rows() if r["preferred_channel"] == "email"]
    debtors, errors = validate_records(load_records(write_csv(tmp_path / "x.csv", rows, columns=columns)), AS_OF)
    assert errors == [] and all(d.phone is None and d.age_band for d in debtors)


def test_duplicate_ids_mark_every_row_using_them() -> None:
    debtors, errors = validate_records(load_records(FIXTURES / "duplicate_ids.csv"), AS_OF)
    assert [d.id for d in debtors] == ["D-T-002"]
    assert [(e.row, e.field) for e in errors] == [(2, "id"), (4, "id")]
    assert "'D-T-001' is also used on row 4" in errors[0].message


@pytest.mark.asyncio
async def test_duplicate_ids_with_skip_bad_rows(store: RedisDebtorStore) -> None:
    report = await import_file(FIXTURES / "duplicate_ids.csv", store, as_of=AS_OF, skip_bad_rows=True)
    assert (report.created, report.skipped) == (1, 2)
    assert await store.all_ids() == ["D-T-002"]


def test_one_phone_for_two_debtors_in_a_file(tmp_path: Path) -> None:
    rows = demo_rows()[:2]
    rows[1]["phone"] = rows[0]["phone"]
    _, errors = validate_records(load_records(write_csv(tmp_path / "x.csv", rows)), AS_OF)
    assert [(e.row, e.field) for e in errors] == [(2, "phone"), (3, "phone")]
    assert "is also given for D-EN-002 (row 3)" in errors[0].message


def test_row_with_wrong_number_of_values() -> None:
    debtors, errors = validate_records(load_records(FIXTURES / "ragged_row.csv"), AS_OF)
    assert [d.id for d in debtors] == ["D-T-002"]
    assert [(e.row, e.field) for e in errors] == [(2, "values")]
    assert "21 values but the header has 20 columns" in errors[0].message


@pytest.mark.asyncio
async def test_ragged_row_is_skippable(store: RedisDebtorStore) -> None:
    report = await import_file(FIXTURES / "ragged_row.csv", store, as_of=AS_OF, skip_bad_rows=True)
    assert (report.created, report.skipped) == (1, 1)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"id,first_name\nD-1,J\xe9r\xf4me\n", "not UTF-8"),
        (b'{"debtors": [}', "not valid JSON"),
        (b'{"people": []}', "unexpected key(s) 'people'"),
        (b'"just text"', "expected a list of debtors"),
        (b'[{"id": "a", "id": "b"}]', "appears twice"),
        (b"[NaN]", "not a number"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    suffix = ".json" if content[:1] in (b"{", b"[", b'"') else ".csv"
    path = tmp_path / f"f{suffix}"
    path.write_bytes(content)
    with pytest.raises(ImportFileError) as info:
        load_records(path)
    assert any(expected in e.message for e in info.value.errors), info.value.errors
    assert all(e.field == "file" for e in info.value.errors)


@pytest.mark.asyncio
async def test_unreadable_file_gives_a_rejected_report(store: RedisDebtorStore, tmp_path: Path) -> None:
    report = await import_file(tmp_path / "does-not-exist.csv", store, as_of=AS_OF)
    assert report.rejected and report.errors[0].field == "file"
    assert "cannot read" in report.errors[0].message


# --- JSON ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_json_input(store: RedisDebtorStore) -> None:
    records = load_records(FIXTURES / "debtors.json")
    assert records[0]["balance"] == Decimal("612.35")  # never a float
    report = await import_file(FIXTURES / "debtors.json", store, as_of=AS_OF)
    assert report.errors == [] and report.created == 2
    sanne = await store.get("D-J-001")
    assert sanne is not None
    assert (sanne.phone, sanne.balance_minor, sanne.age_band, sanne.segment) == ("+31612345001", 61235, "26-40", None)
    lukas = await store.find_by_address("email", "Lukas.Schneider@example.org")
    assert lukas is not None and lukas.phone is None and lukas.balance_minor == 137500
    again = await import_file(FIXTURES / "debtors.json", store, as_of=AS_OF)
    assert again.unchanged == 2


def test_json_plain_list_matches_csv(tmp_path: Path) -> None:
    rows = demo_rows()
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    from_json, errors = validate_records(load_records(path), AS_OF)
    from_csv, _ = validate_records(load_records(DEMO), AS_OF)
    assert errors == [] and from_json == from_csv


def test_json_errors_have_record_number_and_path() -> None:
    debtors, errors = validate_records(load_records(FIXTURES / "bad.json"), AS_OF)
    assert debtors == []
    got = [(e.row, e.field) for e in errors]
    assert got == [(1, "[0].phone"), (1, "[0].balance"), (2, "[1]"), (2, "[1]"), (3, "[2]")]
    assert errors[0].message == "[0].phone: '+31 6 123' is not a valid number for NL"
    assert "more than 2 decimals" in errors[1].message
    assert "missing required field(s): balance" in errors[2].message
    assert "unknown field(s): notes" in errors[3].message
    assert "is text, not an object" in errors[4].message


def test_json_wrapped_paths_name_the_list(tmp_path: Path) -> None:
    row = dict(demo_rows()[0], language="fr")
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"debtors": [row]}), encoding="utf-8")
    _, errors = validate_records(load_records(path), AS_OF)
    assert [(e.row, e.field) for e in errors] == [(1, "debtors[0].language")]
    assert errors[0].message.startswith("debtors[0].language: 'fr' is not one of")


# --- command line ------------------------------------------------------------------------------


def test_nudge_import_dry_run_checks_without_writing() -> None:
    from typer.testing import CliRunner

    from service.cli import app

    runner = CliRunner()
    good = runner.invoke(app, ["import", str(DEMO), "--dry-run", "--as-of", "2026-11-22"])
    assert good.exit_code == 0 and "51 valid debtor(s), 0 problem(s)" in good.output
    bad = runner.invoke(app, ["import", str(FIXTURES / "bad_rows.csv"), "--dry-run", "--as-of", "2026-11-22"])
    assert bad.exit_code == 1 and "row 3: phone:" in bad.output


def test_nudge_import_command(redis_server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.setenv("REDIS_URL", redis_server_url)
    monkeypatch.setenv("NUDGE_KEY_PREFIX", f"cli{uuid.uuid4().hex[:6]}")
    runner = CliRunner()
    first = runner.invoke(app, ["import", str(DEMO)])
    assert first.exit_code == 0 and "created 51" in first.output
    again = runner.invoke(app, ["import", str(DEMO)])
    assert again.exit_code == 0 and "unchanged 51" in again.output

    rows = demo_rows()[:3]
    rows[1]["phone"] = "+31 6 123"
    bad = write_csv(tmp_path / "bad.csv", rows)
    refused = runner.invoke(app, ["import", str(bad)])
    assert refused.exit_code == 1
    assert "row 3: phone" in refused.output and "nothing was imported" in refused.output
    skipped = runner.invoke(app, ["import", str(bad), "--skip-bad-rows"])
    assert skipped.exit_code == 0 and "skipped 1" in skipped.output


def test_plain_list_of_dicts_and_empty_inputs(tmp_path: Path) -> None:
    rows = demo_rows()[:2]
    debtors, errors = validate_records(rows, AS_OF)  # a plain list: numbered like CSV rows
    assert errors == [] and len(debtors) == 2
    _, errors = validate_records([dict(rows[0], language="fr")], AS_OF)
    assert [(e.row, e.field) for e in errors] == [(2, "language")]
    assert validate_records([], AS_OF) == ([], [])
    header_only = write_csv(tmp_path / "h.csv", [])
    assert validate_records(load_records(header_only), AS_OF) == ([], [])


@pytest.mark.asyncio
async def test_header_only_file_imports_nothing_without_errors(store: RedisDebtorStore, tmp_path: Path) -> None:
    report = await import_file(write_csv(tmp_path / "h.csv", []), store, as_of=AS_OF)
    assert report.ok and not report.rejected and report.imported == 0
