"""Rasa's built-in Twilio channel, for bench/load.py, changed only where the benchmark needs it.

Loaded by the engine (Python 3.10, .venv-engine) from credentials.yml as
`nudge_bench_twilio.RedirectedTwilioInput`; bench/load.py puts this directory on its PYTHONPATH.

What is kept exactly as Rasa ships it: the webhook (`/webhooks/twilio/webhook`) runs the whole
turn (NLU, policies, actions, sending) before it answers; sending uses Twilio's synchronous SDK
inside the event loop, retried up to 5 times; no X-Twilio-Signature check.

What is changed:
- the SDK's HTTP client sends to the local fake Twilio (NUDGE_BENCH_TWILIO_API_URL) instead of
  api.twilio.com;
- our actions answer with custom payloads ({"template", "vars"}) that only our worker renders;
  the built-in channel would hand those keys to `messages.create` and fail, so here the body is
  "<recipient> <template>" and the message goes to a fixed test number. That skips rendering,
  which flatters the built-in channel slightly.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Text
from urllib.parse import urlsplit, urlunsplit

from rasa.core.channels.channel import OutputChannel
from rasa.core.channels.twilio import TwilioInput, TwilioOutput
from twilio.http.http_client import TwilioHttpClient

TEST_NUMBER = "+15005550006"


class _RedirectingHttpClient(TwilioHttpClient):
    def request(self, method, url, *args, **kwargs):
        base = urlsplit(os.environ["NUDGE_BENCH_TWILIO_API_URL"])
        parts = urlsplit(url)
        url = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
        return super().request(method, url, *args, **kwargs)


class RedirectedTwilioOutput(TwilioOutput):
    def __init__(self, account_sid, auth_token, twilio_number) -> None:
        super().__init__(account_sid, auth_token, twilio_number)
        self.http_client = _RedirectingHttpClient()

    async def send_custom_json(self, recipient_id: Text, json_message: Dict[Text, Any],
                               **kwargs: Any) -> None:
        body = f"{recipient_id} {json_message.get('template', 'custom')}"
        await self._send_message({"to": TEST_NUMBER, "from_": self.twilio_number, "body": body})


class RedirectedTwilioInput(TwilioInput):
    def get_output_channel(self) -> OutputChannel:
        return RedirectedTwilioOutput(self.account_sid, self.auth_token, self.twilio_number)
