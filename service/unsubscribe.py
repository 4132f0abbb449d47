"""Email unsubscribe links (RFC 8058 one-click) and the page behind them.

Each email carries a link unique to its debtor: ``/unsubscribe/<token>``, where the token is
the debtor id and channel signed with HMAC-SHA256 (keyed by the deployment's pseudonym key).
A signed token is all a link needs: it must not be guessable for another debtor, and it
must keep working for as long as the email sits in an inbox, so it carries no expiry. (Hand
written: it is one HMAC and a compare_digest; a library would add a dependency for that.)

Only a POST unsubscribes: the one-click POST a mail client sends (body
``List-Unsubscribe=One-Click``) or the button on the page. A GET or HEAD, which link scanners
and previews send, shows the page and changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html

from aiohttp import web

from service import appkeys as K
from service.audit import AuditLog
from service.suppression import SuppressionStore

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


def _signature(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), f"unsubscribe:{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode().rstrip("=")


def make_token(secret: str, debtor_id: str, channel: str = "email") -> str:
    payload = base64.urlsafe_b64encode(f"{channel}:{debtor_id}".encode()).decode().rstrip("=")
    return f"{payload}.{_signature(secret, payload)}"


def read_token(secret: str, token: str) -> tuple[str, str] | None:
    """(channel, debtor id) of a genuine token; None for a forged or damaged one."""
    payload, _, signature = token.partition(".")
    if not payload or not hmac.compare_digest(signature, _signature(secret, payload)):
        return None
    try:
        channel, _, debtor_id = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (channel, debtor_id) if channel and debtor_id else None


def unsubscribe_url(public_url: str, secret: str, debtor_id: str) -> str:
    return f"{public_url}/unsubscribe/{make_token(secret, debtor_id)}"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/unsubscribe/{token}", show_page)  # allow_head: HEAD answered too
    app.router.add_post("/unsubscribe/{token}", unsubscribe)


def _page(title: str, body: str, *, form_action: str | None = None) -> web.Response:
    button = (f'<form method="post" action="{html.escape(form_action)}">'
              '<button type="submit">Unsubscribe</button></form>') if form_action else ""
    return web.Response(
        content_type="text/html",
        text=f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             "<meta name='viewport' content='width=device-width'></head><body style='font-family:"
             f"sans-serif;max-width:32rem;margin:3rem auto'><h1>{html.escape(title)}</h1>"
             f"<p>{html.escape(body)}</p>{button}</body></html>",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _debtor_of(request: web.Request) -> tuple[str, str]:
    found = read_token(request.app[K.SETTINGS].pseudonym_key, request.match_info["token"])
    if found is None:
        raise web.HTTPNotFound(text="This unsubscribe link is not valid.")
    return found


async def show_page(request: web.Request) -> web.Response:
    _debtor_of(request)
    return _page("Unsubscribe from our emails",
                 "Press the button to stop receiving emails from us at this address.",
                 form_action=request.path)


async def unsubscribe(request: web.Request) -> web.Response:
    channel, debtor_id = _debtor_of(request)
    debtor = await request.app[K.DEBTORS].get(debtor_id)
    if debtor is not None and debtor.email:
        settings, keys, redis = request.app[K.SETTINGS], request.app[K.KEYS], request.app[K.REDIS]
        body = (await request.text()).strip()
        via = "one_click" if body == ONE_CLICK_BODY else "unsubscribe_page"
        store = SuppressionStore(redis, keys, settings.pseudonym_key)
        if await store.suppress("email", debtor.email, via, whatsapp_phone=debtor.phone):
            await request.app[K.CONVERSATIONS].add_event(debtor_id, "opted_out",
                                                         {"channel": channel, "via": via})
            await AuditLog(redis, keys, settings.pseudonym_key).record(
                "debtor", "opt_out", debtor_id=debtor_id, channel=channel, via=via)
    # The same answer whether or not the debtor still exists: the link reveals nothing.
    return _page("You are unsubscribed", "We will not send further emails to this address.")
