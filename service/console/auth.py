"""Who may use the console, and what they may do there.

- **Accounts** are `service/users.py` (argon2id hashes, four roles). The role is read from Redis
  on every request, so a role change or a disabled account takes effect at once.
- **Sessions** live in Redis: the cookie holds 32 random bytes, Redis a hash keyed by a SHA-256
  of them (a copy of Redis holds no usable session). A session ends after `console_idle_minutes`
  without a request (the key's TTL, renewed on each request) and `console_absolute_hours` after
  login whatever happens. Login always starts a new session id (no fixation); logout deletes it
  on the server. The cookie is HttpOnly, SameSite=Strict, Secure and `__Host-` prefixed (only
  the local http sandbox turns Secure off, `NUDGE_SECURE_COOKIES=0`).
- **CSRF**: every POST/PUT/PATCH/DELETE under /console carries the session's token, as the form
  field `csrf` or the header `X-CSRF-Token` (the page's `<meta name="csrf-token">`); the login
  form uses a double-submit token from a pre-login cookie. SameSite=Strict is the second wall.
- **Throttling**: failed logins are counted per username and per client address over a window;
  past the limit the password is not even checked until the window ends.
- **Audit**: every login (success, failure, throttled), logout, refused action and refused CSRF
  goes to the audit log (service/audit.py).

Handlers declare what they need with ``@requires("permission")``; `PERMISSIONS` is the one table
of which role may do what (tests walk every route against every role with it).

Sessions are written by hand rather than with aiohttp-session: it keeps the raw session id as
the Redis key, has no absolute timeout and no per-user index to end someone's sessions, and
those are the parts that matter here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from service import appkeys as K
from service.audit import AuditLog
from service.logs import get_logger
from service.users import ROLES, UserError, Users
from service.web_json import json_body  # noqa: F401  (handlers use auth.json_body)

log = get_logger("console")

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "web_templates"
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
AUDIT = web.AppKey("console_audit", AuditLog)
USERS = web.AppKey("console_users", Users)
SESSION = web.RequestKey("console_session", object)          # the Session, or None
EXPIRED = web.RequestKey("console_session_expired", bool)     # a cookie came whose session is gone

# Which roles may do what. A permission not listed here is a programming error (KeyError at
# import of the handler), so a typo cannot open a route to everyone.
PERMISSIONS: dict[str, frozenset[str]] = {
    # everyone logged in: their own account page (password change)
    "account.self": frozenset(ROLES),
    # agents and supervisors work conversations
    "inbox.view": frozenset({"agent", "supervisor"}),
    "conversation.work": frozenset({"agent", "supervisor"}),   # claim, reply, note, outcome, hand back
    "debtor.contact": frozenset({"supervisor"}),                # unmasked phone, email, date of birth
    "vulnerability.view": frozenset({"supervisor"}),            # what a vulnerability or hardship is
    # managers own the words and read the results
    "templates.view": frozenset({"supervisor", "manager", "admin"}),
    "templates.edit": frozenset({"manager"}),
    "templates.approve": frozenset({"manager", "admin"}),
    "templates.rollback": frozenset({"manager", "admin"}),
    "dashboard.view": frozenset({"supervisor", "manager", "admin"}),
    # admins keep the house
    "audit.view": frozenset({"admin"}),
    "users.manage": frozenset({"admin"}),
}
assert all(roles <= set(ROLES) for roles in PERMISSIONS.values())

# The navigation: label, path, the permission it needs.
NAV = (("Inbox", "/console/inbox", "inbox.view"),
       ("Templates", "/console/templates", "templates.view"),
       ("Dashboard", "/console/dashboard", "dashboard.view"),
       ("Audit", "/console/audit", "audit.view"),
       ("Users", "/console/users", "users.manage"))
HOME = {"agent": "/console/inbox", "supervisor": "/console/inbox",
        "manager": "/console/dashboard", "admin": "/console/audit"}

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOGIN_COOKIE = "nudge_login"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")


@dataclass(frozen=True)
class ConsoleUser:
    username: str
    role: str


@dataclass(frozen=True)
class Session:
    digest: str
    user: ConsoleUser
    csrf: str
    created: float


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def cookie_name(request: web.Request) -> str:
    # __Host- cookies must be Secure, host-only and Path=/; browsers refuse them otherwise.
    return "__Host-nudge_console" if request.app[K.SETTINGS].secure_cookies else "nudge_console"


# --- sessions -----------------------------------------------------------------------------
async def start_session(request: web.Request, response: web.StreamResponse, user: ConsoleUser) -> Session:
    """A new session for `user` (a new id every login), its cookie set on `response`."""
    settings, keys, redis = request.app[K.SETTINGS], request.app[K.KEYS], request.app[K.REDIS]
    old = request.get(SESSION)
    if old is not None:
        await end_session(request, old)
    session_id = secrets.token_urlsafe(32)
    session = Session(digest(session_id), user, secrets.token_urlsafe(32), time.time())
    idle = int(settings.console_idle_minutes * 60)
    key = keys.console_session(session.digest)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={"user": user.username, "created": session.created,
                                "last_seen": session.created, "csrf": session.csrf})
        pipe.expire(key, idle)
        pipe.sadd(keys.console_sessions_of(user.username), session.digest)
        await pipe.execute()
    response.set_cookie(cookie_name(request), session_id, httponly=True, samesite="Strict",
                        secure=settings.secure_cookies, path="/",
                        max_age=int(settings.console_absolute_hours * 3600))
    request[SESSION] = session
    return session


async def end_session(request: web.Request, session: Session) -> None:
    keys, redis = request.app[K.KEYS], request.app[K.REDIS]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.console_session(session.digest))
        pipe.srem(keys.console_sessions_of(session.user.username), session.digest)
        await pipe.execute()


async def end_all_sessions(request: web.Request, username: str) -> int:
    keys, redis = request.app[K.KEYS], request.app[K.REDIS]
    digests = await redis.smembers(keys.console_sessions_of(username))
    if digests:
        await redis.delete(*[keys.console_session(d.decode()) for d in digests])
    await redis.delete(keys.console_sessions_of(username))
    return len(digests)


async def load_session(request: web.Request) -> Session | None:
    """The request's live session, renewed; None (and request[EXPIRED] when a cookie came) if
    there is none, it idled out, it passed its absolute limit, or its user was disabled."""
    request[SESSION] = None
    request[EXPIRED] = False
    session_id = request.cookies.get(cookie_name(request))
    if not session_id or len(session_id) > 100:
        return None
    settings, keys, redis = request.app[K.SETTINGS], request.app[K.KEYS], request.app[K.REDIS]
    key_digest = digest(session_id)
    key = keys.console_session(key_digest)
    raw = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
    request[EXPIRED] = True
    if not raw.get("user"):
        return None
    username, created = raw["user"], float(raw.get("created", 0))
    stale = Session(key_digest, ConsoleUser(username, ""), raw.get("csrf", ""), created)
    if time.time() - created > settings.console_absolute_hours * 3600:
        await end_session(request, stale)
        return None
    role = await request.app[USERS].active_role(username)
    if role is None:
        await end_session(request, stale)
        return None
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, "last_seen", time.time())
        pipe.expire(key, int(settings.console_idle_minutes * 60))
        await pipe.execute()
    request[EXPIRED] = False
    request[SESSION] = Session(key_digest, ConsoleUser(username, role), raw.get("csrf", ""), created)
    return request[SESSION]


async def session_alive(request: web.Request) -> bool:
    """For long-lived streams: is the session that opened it still there (not logged out,
    not idled out)? Does not renew it: a stream alone does not keep someone logged in."""
    session = request.get(SESSION)
    if session is None:
        return False
    if time.time() - session.created > request.app[K.SETTINGS].console_absolute_hours * 3600:
        return False
    return bool(await request.app[K.REDIS].exists(request.app[K.KEYS].console_session(session.digest)))


# --- what handlers use --------------------------------------------------------------------
def user(request: web.Request) -> ConsoleUser:
    session = request.get(SESSION)
    if session is None:
        raise web.HTTPUnauthorized(text="not logged in")
    return session.user


def allowed(request: web.Request, permission: str) -> bool:
    session = request.get(SESSION)
    return session is not None and session.user.role in PERMISSIONS[permission]


def wants_json(request: web.Request) -> bool:
    path = request.path
    return path.startswith("/console/api/") or path.endswith((".svg", ".csv", ".json"))


def requires(permission: str) -> Callable[[Callable[[web.Request], Awaitable[web.StreamResponse]]],
                                          Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Guard a handler: 401 (or the login page) without a session, 403 (audited) without the
    permission. The guard is kept on the handler as `.permission` for the route tests."""
    roles = PERMISSIONS[permission]

    def wrap(handler):
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = request.get(SESSION)
            if session is None:
                return login_required(request)
            if session.user.role not in roles:
                await audit(request, "access.refused", permission=permission,
                            method=request.method, path=request.path)
                return error(request, 403, f"A {session.user.role} may not do this "
                                           f"({permission}).")
            return await handler(request)

        guarded.permission = permission  # type: ignore[attr-defined]
        return guarded
    return wrap


def login_required(request: web.Request) -> web.Response:
    message = ("Your session has expired; please log in again." if request.get(EXPIRED)
               else "Please log in.")
    if wants_json(request) or request.method != "GET":
        return web.json_response({"error": message, "login": "/console/login"}, status=401)
    target = "/console/login?next=" + quote(request.path_qs, safe="")
    if request.get(EXPIRED):
        target += "&expired=1"
    raise web.HTTPFound(target)


def error(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request) or request.method != "GET":
        return web.json_response({"error": message}, status=status)
    return render(request, "console/error.html", {"status": status, "message": message},
                  status=status)


async def audit(request: web.Request, action: str, *, debtor_id: str | None = None,
                actor: str | None = None, **detail: Any) -> None:
    session = request.get(SESSION)
    who = actor or (session.user.username if session else "anonymous")
    await request.app[AUDIT].record(who, action, debtor_id=debtor_id, **detail)


def csrf_token(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf if session else ""


def render(request: web.Request, template: str, context: dict[str, Any], *,
           status: int = 200) -> web.Response:
    session = request.get(SESSION)
    nav = [(label, path) for label, path, permission in NAV
           if session is not None and session.user.role in PERMISSIONS[permission]]
    return aiohttp_jinja2.render_template(
        template, request,
        {"me": session.user if session else None, "csrf": csrf_token(request), "nav": nav,
         "active": request.path, "company": request.app[K.SETTINGS].company_name,
         "can": lambda permission: allowed(request, permission), **context},
        app_key=TEMPLATES, status=status)


# --- middleware: session, CSRF, headers ---------------------------------------------------
@web.middleware
async def console_middleware(request: web.Request, handler):
    if not request.path.startswith("/console"):
        return await handler(request)
    try:
        if not request.path.startswith("/console/static/"):
            await load_session(request)
            if request.method in UNSAFE_METHODS and request.path != "/console/login":
                refusal = await _csrf_refusal(request)
                if refusal is not None:
                    return harden(refusal)
        response = await handler(request)
    except web.HTTPException as exception:
        harden(exception)
        raise
    return harden(response)


async def _csrf_refusal(request: web.Request) -> web.Response | None:
    session = request.get(SESSION)
    if session is None:
        return None  # the handler answers 401; nothing to forge without a session
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type in ("application/x-www-form-urlencoded",
                                                 "multipart/form-data"):
        sent = (await request.post()).get("csrf")
    if isinstance(sent, str) and sent and hmac.compare_digest(sent.encode(), session.csrf.encode()):
        return None
    await audit(request, "csrf.refused", method=request.method, path=request.path)
    log.warning("console.csrf_refused", path=request.path)
    return error(request, 403, "The form's security token is missing or wrong; reload the page "
                               "and try again.")


def harden(response: web.StreamResponse) -> web.StreamResponse:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cache-Control", "no-store")
    return response


# --- login and logout ---------------------------------------------------------------------
async def login_page(request: web.Request) -> web.Response:
    if request.get(SESSION) is not None:
        raise web.HTTPFound(HOME.get(request[SESSION].user.role, "/console/inbox"))
    return _login_form(request, message="Your session has expired; please log in again."
                       if request.query.get("expired") else "")


def _login_form(request: web.Request, *, message: str = "", status: int = 200,
                username: str = "") -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "console/login.html",
                      {"login_token": token, "message": message, "username": username,
                       "next": _safe_next(request.query.get("next", ""))}, status=status)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.app[K.SETTINGS].secure_cookies, path="/console/login",
                        max_age=3600)
    return response


def _safe_next(target: str) -> str:
    """Only our own console pages: never an open redirect."""
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


async def login(request: web.Request) -> web.StreamResponse:
    settings, keys, redis = request.app[K.SETTINGS], request.app[K.KEYS], request.app[K.REDIS]
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()[:64]
    password = str(form.get("password", ""))
    sent, expected = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        await audit(request, "csrf.refused", actor="anonymous", path=request.path)
        return _login_form(request, message="The login form expired; please try again.",
                           status=403, username=username)
    address = request.remote or "unknown"
    user_key, address_key = keys.login_failures("user", username), keys.login_failures("address", address)
    failures_user, failures_address = await redis.mget(user_key, address_key)
    if (int(failures_user or 0) >= settings.login_max_failures_per_user
            or int(failures_address or 0) >= settings.login_max_failures_per_address):
        wait = max(await redis.ttl(user_key), await redis.ttl(address_key), 60)
        await audit(request, "login.throttled", actor=username or "anonymous")
        return _login_form(request, status=429, username=username,
                           message=f"Too many failed attempts. Try again in {-(-wait // 60)} minutes.")
    try:
        role = await request.app[USERS].authenticate(username, password)
    except UserError:
        window = int(settings.login_throttle_minutes * 60)
        async with redis.pipeline(transaction=False) as pipe:
            for key in (user_key, address_key):
                pipe.incr(key)
                pipe.expire(key, window, nx=True)
            await pipe.execute()
        await audit(request, "login.failed", actor=username or "anonymous")
        return _login_form(request, status=401, username=username,
                           message="Unknown user or wrong password.")
    await redis.delete(user_key)
    response = web.HTTPFound(_safe_next(str(form.get("next", ""))) or HOME.get(role, "/console/inbox"))
    await start_session(request, response, ConsoleUser(username, role))
    response.del_cookie(LOGIN_COOKIE, path="/console/login")
    await audit(request, "login.success", role=role)
    log.info("console.login", user=username, role=role)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    response = web.HTTPFound("/console/login")
    if session is not None:
        await end_session(request, session)
        await audit(request, "logout")
    response.del_cookie(cookie_name(request), path="/")
    raise response


@requires("account.self")
async def account_page(request: web.Request) -> web.Response:
    return render(request, "console/account.html", {"message": "", "ok": False})


@requires("account.self")
async def change_password(request: web.Request) -> web.Response:
    """A person changes their own password: the current one is asked again, and every other
    session of theirs ends (someone who knew the old password is out)."""
    me = user(request)
    form = await request.post()
    users = request.app[USERS]
    try:
        await users.authenticate(me.username, str(form.get("current", "")))
        if form.get("new") != form.get("repeat"):
            raise UserError("the two new passwords differ")
        await users.set_password(me.username, str(form.get("new", "")))
    except UserError as problem:
        await audit(request, "account.password_refused")
        return render(request, "console/account.html", {"message": str(problem), "ok": False},
                      status=400)
    await end_all_sessions(request, me.username)
    cookie_carrier = web.Response()
    await start_session(request, cookie_carrier, me)   # this browser stays in, with a new id
    response = render(request, "console/account.html",
                      {"message": "Password changed; your other sessions have ended.", "ok": True})
    for name, morsel in cookie_carrier.cookies.items():
        response.cookies[name] = morsel
    await audit(request, "account.password_changed")
    return response


async def home(request: web.Request) -> web.StreamResponse:
    session = request.get(SESSION)
    if session is None:
        raise web.HTTPFound("/console/login")
    raise web.HTTPFound(HOME.get(session.user.role, "/console/login"))


def setup(app: web.Application) -> None:
    """The console's template environment, middleware and login routes."""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                         app_key=TEMPLATES, autoescape=True, undefined=jinja2.StrictUndefined)
    app.middlewares.append(console_middleware)
    app.router.add_get("/console", home)
    app.router.add_get("/console/", home)
    app.router.add_get("/console/login", login_page)
    app.router.add_post("/console/login", login)
    app.router.add_post("/console/logout", logout)
    app.router.add_get("/console/account", account_page)
    app.router.add_post("/console/account/password", change_password)
    app.router.add_static("/console/static", Path(__file__).resolve().parents[1] / "static" / "console")

    async def services(app: web.Application):
        settings = app[K.SETTINGS]
        app[AUDIT] = AuditLog(app[K.REDIS], app[K.KEYS], settings.pseudonym_key)
        app[USERS] = Users(app[K.REDIS], app[K.KEYS])
        yield

    app.cleanup_ctx.append(services)
