"""policies/channels.yml: the shipped file loads, and each mistake is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from service.channel_config import (
    ChannelConfig,
    ChannelConfigError,
    parse_channel_config,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
RAW = yaml.safe_load((POLICIES / "channels.yml").read_text())


def test_the_shipped_file_loads():
    config = ChannelConfig.load(POLICIES)
    assert config.sms.from_number and config.whatsapp.from_number.startswith("whatsapp:")
    assert config.content_templates["reminder_first"].sids["nl"].startswith("HX")
    assert config.buttons["STOP"] == "opt_out"
    assert config.pacing("sms")[1] == 10 and config.pacing("email")[0].startswith("email:")
    assert config.retry.delay(1) == 2 and config.retry.delay(30) == 600


@pytest.mark.parametrize("path, value, named", [
    (("sms", "from_number"), "0612345678", "sms.from_number"),
    (("whatsapp", "from_number"), "+3197010520001", "whatsapp.from_number"),
    (("sms", "messaging_service_sid"), "MGnope", "sms.messaging_service_sid"),
    (("sms", "pacing_per_second"), -1, "sms.pacing_per_second"),
    (("whatsapp", "content_templates", "reminder_first", "sids", "fr"), "HX" + "0" * 32, "sids"),
    (("whatsapp", "content_templates", "reminder_first", "sids", "en"), "HXshort", "sids"),
    (("whatsapp", "content_templates", "reminder_first", "buttons"), ["NOPE"], "NOPE"),
    (("email", "from_address"), "not an address", "email.from_address"),
    (("email", "transport"), "pigeon", "email.transport"),
    (("fallback_order",), ["sms", "sms"], "fallback_order"),
    (("sms", "replace_smart_characters"), "yes", "replace_smart_characters"),
])
def test_each_mistake_is_named(path, value, named):
    raw = copy.deepcopy(RAW)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ChannelConfigError) as error:
        parse_channel_config(raw, source="channels.yml")
    assert named in str(error.value) and str(error.value).startswith("channels.yml: ")


def test_every_mistake_at_once():
    raw = copy.deepcopy(RAW)
    raw["sms"]["from_number"] = "x"
    raw["email"]["transport"] = "x"
    with pytest.raises(ChannelConfigError) as error:
        parse_channel_config(raw)
    assert "sms.from_number" in str(error.value) and "email.transport" in str(error.value)
