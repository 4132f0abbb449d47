"""The web console: agents take over conversations, managers edit and approve the tone
templates and read the results, admins read the audit log and keep the accounts.

Server-rendered pages (aiohttp-jinja2, service/web_templates/console/) with a little JavaScript
each (service/static/console/), JSON APIs under /console/api/, live updates as server-sent
events fed by Redis pub/sub. Everything is behind `auth` (sessions, roles, CSRF).
"""

from __future__ import annotations

import importlib

from aiohttp import web

from service.console import auth

# Each module has add_routes(app). Imported by name so the console grows one module at a time.
PARTS = ("inbox", "editor", "dashboard", "audit_view", "users_admin")


def add_routes(app: web.Application) -> None:
    auth.setup(app)
    for name in PARTS:
        try:
            module = importlib.import_module(f"service.console.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"service.console.{name}":
                raise
            continue
        module.add_routes(app)
