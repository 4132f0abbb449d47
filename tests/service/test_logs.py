"""Logs carry no bodies or secrets, and mask phone numbers and emails."""

from __future__ import annotations

import json

from service.logs import configure_logging, get_logger, mask


def test_mask_phone_and_email():
    assert mask("call +31 6 12345678 now") == "call +31 ****78 now"
    assert mask("mail anna.jansen@example.nl") == "mail a***@example.nl"
    assert mask("ref 2026") == "ref 2026"


def test_log_lines_drop_bodies_and_tokens(capsys):
    configure_logging("INFO")
    get_logger("test").info("inbound", body="I lost my job", token="s3cret",
                            address="+447400123001", debtor="D-EN-001")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["body"] == "[dropped]" and line["token"] == "[dropped]"
    assert "123001" not in line["address"] and line["debtor"] == "D-EN-001"
