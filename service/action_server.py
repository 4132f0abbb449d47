"""The action server: rasa_sdk's ActionExecutor behind a small aiohttp app.

Why not `python -m rasa_sdk`: its Sanic server has no authentication, and ours must refuse
anyone but the engine. The engine sends its token as `?token=` (engine/endpoints.yml); this
app compares it in constant time, then hands the call to the SDK's own executor, so the
protocol (events, responses, rejections) is exactly rasa_sdk's.
"""

from __future__ import annotations

import hmac
import logging

import redis.asyncio as aioredis
from aiohttp import web
from rasa_sdk.executor import ActionExecutor
from rasa_sdk.interfaces import ActionExecutionRejection, ActionNotFoundException

from bot.actions import context as action_context
from service.logs import configure_logging, get_logger
from service.settings import Settings

EXECUTOR = web.AppKey("executor", ActionExecutor)
REDIS = web.AppKey("redis", aioredis.Redis)
log = get_logger("actions")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    executor = ActionExecutor()
    executor.register_package("bot.actions")
    app[EXECUTOR] = executor

    async def redis_ctx(app: web.Application):
        client = aioredis.from_url(settings.redis_url)
        app[REDIS] = client
        action_context.configure(client, settings)
        yield
        await client.aclose()

    app.cleanup_ctx.append(redis_ctx)

    async def webhook(request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        if not settings.actions_token or not hmac.compare_digest(token, settings.actions_token):
            return web.json_response({"error": "forbidden"}, status=403)
        try:
            call = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        action = call.get("next_action")
        try:
            result = await executor.run(call)
        except ActionExecutionRejection as error:
            return web.json_response({"error": error.message, "action_name": error.action_name}, status=400)
        except ActionNotFoundException as error:
            log.error("action_not_found", action=action)
            return web.json_response({"error": error.message, "action_name": error.action_name}, status=404)
        except Exception:
            log.exception("action_failed", action=action)
            return web.json_response({"error": f"action {action} failed"}, status=500)
        return web.json_response(result.model_dump() if result else None)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "actions": len(executor.actions)})

    app.router.add_post("/webhook", webhook)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    settings = Settings.from_env()
    settings.require_tokens()
    configure_logging(settings.log_level)
    logging.getLogger("rasa_sdk").setLevel(logging.WARNING)
    web.run_app(create_app(settings), host="127.0.0.1", port=settings.actions_port,
                print=None, shutdown_timeout=10, access_log=None)


if __name__ == "__main__":
    main()
