"""A small stand-in for a creditor's system receiving Nudge's business events, for tests and the
local demo.

* ``POST /events`` checks the Nudge-Signature (403 when it is missing or wrong, as a real
  receiver should), then records the event once by its id: a repeat (at-least-once delivery
  resends after a lost answer) is acknowledged with 200 and counted, not stored again.
* ``GET /_fake/events`` lists what was received: the de-duplicated events, and every POST on
  the wire with its answer.
* ``POST /_fake/fail`` ``{"count": N, "status": 500}`` makes the next N signed posts fail with
  that status (an outage to recover from).

Run on its own: ``python -m sandbox.fake_creditor --port 8095``, the secret from
NUDGE_CREDITOR_WEBHOOK_SECRET (so it does not show in `ps`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.signatures import HEADER, SignatureError, verify


@dataclass
class FakeCreditor:
    secret: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> event, in order
    wire: list[dict[str, Any]] = field(default_factory=list)         # every POST: id, type, status
    duplicates: int = 0
    fail_next: int = 0
    fail_status: int = 500

    def received(self, event_id: str) -> int:
        """How many times an event id came over the wire (any answer)."""
        return sum(1 for post in self.wire if post["event_id"] == event_id)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("Nudge-Event-Id", "")
        post = {"event_id": event_id, "type": request.headers.get("Nudge-Event-Type"),
                "status": None}
        self.wire.append(post)
        try:
            verify(self.secret, request.headers.get(HEADER), body)
        except SignatureError as exc:
            return self._answer(post, 403, {"error": f"signature {exc}"})
        if self.fail_next > 0:
            self.fail_next -= 1
            return self._answer(post, self.fail_status, {"error": "scripted failure"})
        try:
            event = json.loads(body)
        except ValueError:
            return self._answer(post, 400, {"error": "body is not JSON"})
        if not isinstance(event, dict) or event.get("id") != event_id:
            return self._answer(post, 400, {"error": "Nudge-Event-Id does not match id"})
        if event_id in self.events:
            self.duplicates += 1
            return self._answer(post, 200, {"status": "duplicate"})
        self.events[event_id] = event
        return self._answer(post, 200, {"status": "received"})

    @staticmethod
    def _answer(post: dict[str, Any], status: int, body: dict[str, Any]) -> web.Response:
        post["status"] = status
        return web.json_response(body, status=status)

    async def list_events(self, request: web.Request) -> web.Response:
        return web.json_response({"events": list(self.events.values()), "wire": self.wire,
                                  "duplicates": self.duplicates})

    async def script_failures(self, request: web.Request) -> web.Response:
        try:
            order = await request.json()
            count, status = int(order.get("count", 1)), int(order.get("status", 500))
        except (ValueError, TypeError, AttributeError):
            return web.json_response({"error": 'expected {"count": N, "status": 500}'}, status=400)
        self.fail_next, self.fail_status = count, status
        return web.json_response({"fail_next": count, "status": status})


FAKE_CREDITOR = web.AppKey("fake_creditor", FakeCreditor)


def create_fake_creditor(secret: str) -> web.Application:
    fake = FakeCreditor(secret)
    app = web.Application()
    app[FAKE_CREDITOR] = fake
    app.router.add_post("/events", fake.receive)
    app.router.add_get("/_fake/events", fake.list_events)
    app.router.add_post("/_fake/fail", fake.script_failures)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    secret = os.environ.get("NUDGE_CREDITOR_WEBHOOK_SECRET", "")
    if not secret:
        sys.exit("fake_creditor: NUDGE_CREDITOR_WEBHOOK_SECRET must be set")
    print(f"fake creditor on http://{args.host}:{args.port}/events", flush=True)
    web.run_app(create_fake_creditor(secret), host=args.host, port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
