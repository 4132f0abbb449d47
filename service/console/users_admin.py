"""Accounts, for admins: who can log in with which role; add, disable, enable, end sessions.
Passwords are set by the person (their account page) or by `nudge users add`; an admin who
adds someone here gives them a first password to change."""

from __future__ import annotations

from aiohttp import web

from service.console import auth
from service.users import ROLES, UserError


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/users", users_page)
    app.router.add_post("/console/users", add_user)
    app.router.add_post("/console/users/{username}/disable", disable_user)
    app.router.add_post("/console/users/{username}/enable", enable_user)


async def _page(request: web.Request, message: str = "", ok: bool = True, status: int = 200) -> web.Response:
    return auth.render(request, "console/users.html",
                       {"people": await request.app[auth.USERS].list(), "roles": ROLES,
                        "message": message, "ok": ok}, status=status)


@auth.requires("users.manage")
async def users_page(request: web.Request) -> web.Response:
    return await _page(request)


@auth.requires("users.manage")
async def add_user(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()
    role = str(form.get("role", ""))
    try:
        await request.app[auth.USERS].add(username, role, str(form.get("password", "")))
    except UserError as problem:
        return await _page(request, str(problem), ok=False, status=400)
    await auth.audit(request, "user.add", username=username, role=role)
    return await _page(request, f"{username} ({role}) added.")


@auth.requires("users.manage")
async def disable_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    if username == auth.user(request).username:
        return await _page(request, "You cannot disable yourself.", ok=False, status=400)
    try:
        await request.app[auth.USERS].disable(username)
    except UserError as problem:
        return await _page(request, str(problem), ok=False, status=404)
    ended = await auth.end_all_sessions(request, username)
    await auth.audit(request, "user.disable", username=username, sessions_ended=ended)
    return await _page(request, f"{username} disabled; {ended} session(s) ended.")


@auth.requires("users.manage")
async def enable_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    try:
        await request.app[auth.USERS].enable(username)
    except UserError as problem:
        return await _page(request, str(problem), ok=False, status=404)
    await auth.audit(request, "user.enable", username=username)
    return await _page(request, f"{username} enabled.")
