"""The worker: arq consumers for inbound processing, reminders, delivery to the providers
(service/delivery.py) and acting on failed deliveries, plus a sweep that finds work a crashed
process left behind, and a daily retention run (service/privacy.py). Arrangements (#4): a
minutely follow-up sweep (service/follow_up.py), payment receipts, and the delivery of
business events to creditors (service/creditor_webhooks.py) as a background task.

Run with `python -m service.worker`. SIGINT/SIGTERM cancel running jobs, which arq puts back
on the queue; every job is idempotent (service/processing.py), so a retry sends nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arq import Retry, cron
from arq.connections import RedisSettings
from arq.worker import Worker, get_kwargs
from prometheus_client import start_http_server
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from bot.core.arrangement_policy import load_policy_book
from service.arrangements import ArrangementBook
from service.creditor_config import load_creditor_config
from service.campaigns import Campaigns
from service.creditor_webhooks import CreditorWebhooks
from service.delivery import Deliverer
from service.follow_up import FollowUps
from service.pay_links import PayLinks
from service.delivery_failures import FailureHandler
from service.engine import EngineClient, EngineError
from service.logs import configure_logging, get_logger
from service.privacy import load_retention_policy, run_retention
from service.processing import Processor
from service.providers import EmailProvider, TwilioProvider
from service.routing import InboundRouter
from service.settings import Settings, read_local_secrets
from service.templates import TemplateRenderer

log = get_logger("worker")
SETTINGS = Settings.from_env()


async def startup(ctx: dict[str, Any]) -> None:
    settings = SETTINGS
    engine = EngineClient(settings.engine_url, settings.engine_token,
                          timeout=settings.engine_timeout_seconds)
    ctx["processor"] = Processor(settings, ctx["redis"], engine,
                                 TemplateRenderer(settings.templates_dir,
                                                  company_name=settings.company_name))
    ctx["engine"] = engine
    processor: Processor = ctx["processor"]
    settings.require_twilio()
    router = InboundRouter(ctx["redis"], processor.keys, settings.pseudonym_key)
    providers = {"sms": TwilioProvider(settings, processor.channel_config),
                 "email": EmailProvider(settings, processor.channel_config, router)}
    providers["whatsapp"] = providers["sms"]
    ctx["providers"] = providers
    ctx["deliverer"] = Deliverer(ctx["redis"], processor.keys, processor.channel_config,
                                 providers, settings.queue_name, on_failure=_failed(ctx))
    ctx["failures"] = FailureHandler(ctx["deliverer"].store, processor.sender,
                                     processor.rules.suppressions, processor.conversations,
                                     processor.rules.audit)
    # An invalid retention policy stops the worker at start-up, not at 03:30 (service/privacy.py).
    ctx["retention_policy"] = load_retention_policy(settings)
    # The same for the creditors' arrangement policies.
    ctx["follow_ups"] = FollowUps(processor, ArrangementBook(ctx["redis"], processor.keys),
                                  load_policy_book(settings.policies_dir / "arrangements.yml"),
                                  PayLinks(settings.pay_link_secret, settings.public_url))
    # Business events to the creditors' systems: a loop beside the jobs, stopped at shutdown
    # (an event in flight is taken over after the visibility timeout, never lost).
    creditors = load_creditor_config(settings.policies_dir / "creditors.yml")
    if settings.creditor_events_url:
        creditors = creditors.all_to(settings.creditor_events_url)
    secrets = creditors.secrets_from({**read_local_secrets(settings.state_dir), **os.environ})
    for name in creditors.missing_secrets(secrets):
        log.warning("creditor_secret_missing", variable=name)  # retried until it is set
    hooks = CreditorWebhooks(ctx["redis"], processor.keys, creditors, secrets,
                             timeout=settings.creditor_webhook_timeout_seconds,
                             visibility_timeout=settings.creditor_webhook_visibility_seconds,
                             batch=settings.creditor_webhook_batch)
    ctx["creditor_webhooks"], ctx["stop_webhooks"] = hooks, asyncio.Event()
    ctx["webhooks_task"] = asyncio.create_task(hooks.run_forever(ctx["stop_webhooks"]))
    # Campaigns (#6): planned and sent by a loop beside the jobs; two workers share the work
    # (a lease per queued debtor, a lock per planning batch).
    ctx["campaigns"] = Campaigns(ctx["redis"], processor.keys, processor.segments,
                                 rules=processor.rules, sender=processor.sender,
                                 chooser=processor.tones, queue_name=settings.queue_name)
    ctx["campaigns_task"] = asyncio.create_task(
        ctx["campaigns"].run_forever(ctx["stop_webhooks"]))
    await sweep(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    if "webhooks_task" in ctx:
        ctx["stop_webhooks"].set()
        await asyncio.wait([ctx["webhooks_task"], *([ctx["campaigns_task"]]
                                                     if "campaigns_task" in ctx else [])],
                           timeout=15)
        await ctx["creditor_webhooks"].close()
    await ctx["engine"].close()
    for provider in {id(p): p for p in ctx.get("providers", {}).values()}.values():
        await provider.close()


def _failed(ctx: dict[str, Any]):
    async def on_failure(record: dict[str, str]) -> None:
        # A failure at create time (21610, 21211...): acted on in its own job, like one a
        # status callback reports, so a crash here cannot lose it.
        await ctx["redis"].enqueue_job("handle_delivery_failure", record["message_id"],
                                       _job_id=f"fail:{record['message_id']}",
                                       _queue_name=SETTINGS.queue_name)
    return on_failure


async def deliver_message(ctx: dict[str, Any], message_id: str) -> str:
    return await ctx["deliverer"].deliver(message_id)


async def handle_delivery_failure(ctx: dict[str, Any], message_id: str) -> str:
    return await ctx["failures"].handle(message_id)


def _backoff(ctx: dict[str, Any]) -> float:
    return min(30.0, 0.5 * 2 ** (ctx.get("job_try", 1) - 1))


async def process_conversation(ctx: dict[str, Any], conversation_id: str) -> int:
    try:
        return await ctx["processor"].process_pending(conversation_id)
    except EngineError as error:
        log.warning("engine_unavailable", conversation=conversation_id, error=str(error)[:200],
                    attempt=ctx.get("job_try"))
        raise Retry(defer=_backoff(ctx)) from error


async def flush_engine_events(ctx: dict[str, Any], conversation_id: str) -> int:
    """An agent's turns and hand-backs from the console into the engine's tracker, in order
    (service/engine_outbox.py); arq retries it while the engine is away."""
    return await ctx["processor"].flush_engine_outbox(conversation_id)


async def send_reminder(ctx: dict[str, Any], debtor_id: str, channel: str, message_id: str) -> str:
    try:
        return await ctx["processor"].send_reminder(debtor_id, channel, message_id)
    except EngineError as error:
        raise Retry(defer=_backoff(ctx)) from error


async def sweep(ctx: dict[str, Any]) -> int:
    """Enqueue conversations with pending messages that no job holds (after a crash), and
    plan again the deferred messages that are due."""
    processor: Processor = ctx["processor"]
    keys, redis = processor.keys, processor.redis
    found = 0
    async for key in redis.scan_iter(match=keys.pending("*")):
        conversation_id = key.decode().split(":", 2)[-1]
        if await redis.llen(key) and not await redis.exists(keys.conversation_lock(conversation_id)):
            await redis.enqueue_job("process_conversation", conversation_id,
                                    _job_id=f"sweep:{conversation_id}:{int(time.time() // 10)}",
                                    _queue_name=SETTINGS.queue_name)
            found += 1
    if found:
        log.info("sweep_requeued", conversations=found)
    # Messages the contact rules deferred (night, caps, a broken template) whose time has come.
    released = await processor.sender.release_due()
    if released:
        log.info("deferred_released", messages=released)
    # Outbound messages whose delivery job was lost (a crash between outbox and enqueue).
    stalled = await ctx["deliverer"].requeue_stalled(time.time())
    if stalled:
        log.info("delivery_requeued", messages=stalled)
    return found


async def follow_up_sweep(ctx: dict[str, Any]) -> int:
    """Reminders before instalments and promises, notes after a miss, broken arrangements."""
    return await ctx["follow_ups"].sweep(time.time())


async def payment_receipt(ctx: dict[str, Any], debtor_id: str, payment_id: str,
                          amount_minor: int) -> str | None:
    return await ctx["follow_ups"].receipt(debtor_id, payment_id, amount_minor)


async def arrangement_confirmation(ctx: dict[str, Any], debtor_id: str,
                                   arrangement_id: str) -> str | None:
    return await ctx["follow_ups"].confirmation(debtor_id, arrangement_id)


async def campaign_step(ctx: dict[str, Any], segment: str, step: int, origin: str,
                        run: int) -> str:
    """A workflow's next step, scheduled by the campaign before it (a deferred job: durable
    in Redis, run once by one worker). Starting it twice makes one campaign."""
    return await ctx["campaigns"].start(segment, step, by="scheduler", run=run, parent=origin)


async def resolve_tones(ctx: dict[str, Any]) -> int:
    """Campaign messages whose success window closed without a success: failures for the
    bandit and the social-proof figures."""
    return await ctx["processor"].outcomes.resolve_expired(time.time())


async def retention(ctx: dict[str, Any]) -> dict[str, int]:
    """Daily: delete what has outlived its period in policies/retention.yml (counts only logged)."""
    policy = ctx.get("retention_policy") or load_retention_policy(SETTINGS)
    counts = await run_retention(ctx["redis"], SETTINGS, policy, time.time())
    log.info("retention", **counts)
    return counts


#: What a lost Redis connection looks like from inside arq (a WATCH that lost its connection
#: is reported as a WatchError).
REDIS_LOST = (RedisConnectionError, RedisTimeoutError, WatchError)


class ResilientWorker(Worker):
    """arq's Worker, kept alive while Redis is away.

    arq's polling loop lets a lost Redis connection escape (arq 0.28: `_poll_iteration` has no
    error handling), so a Redis restart or failover ended the worker process, and with it all
    sending, until someone restarted it (found by tests/e2e/test_faults.py, kill -9 of Redis).
    Everything else in the worker already rides out an outage (the campaign and creditor-event
    loops log and try again; redis-py reconnects on the next command), so the loop here waits
    and polls again. Jobs that were cut off by the outage stay in arq's queue and run again
    when their in-progress marker expires; the sweep re-enqueues pending conversations and
    deliveries sooner."""

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except REDIS_LOST as error:
            log.warning("redis_unavailable", error=str(error)[:200])
            await asyncio.sleep(1.0)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # One job at a time: arq takes a slot (semaphore and counter) before it claims a job in
        # Redis and does not give it back when the claim fails, so every outage that struck
        # mid-claim would leave the worker one job slot short, for good.
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return                                     # full: the next poll tries again
            started_before = self.tasks.get(job_id.decode())
            try:
                await super().start_jobs([job_id])
            except REDIS_LOST:
                if self.tasks.get(job_id.decode()) is started_before:   # took a slot, no task
                    self.job_counter -= 1
                    self.sem.release()
                raise


class WorkerSettings:
    functions = [process_conversation, send_reminder, deliver_message, handle_delivery_failure,
                 payment_receipt, arrangement_confirmation, campaign_step, flush_engine_events]
    cron_jobs = [cron(sweep, second={0, 30}, run_at_startup=False, unique=True),
                 cron(follow_up_sweep, second={15}, run_at_startup=True, unique=True),
                 cron(resolve_tones, second={45}, run_at_startup=False, unique=True),
                 cron(retention, hour={3}, minute={30}, second={0}, run_at_startup=False,
                      unique=True, timeout=3600)]
    on_startup = startup
    on_shutdown = shutdown
    queue_name = SETTINGS.queue_name
    redis_settings = RedisSettings.from_dsn(SETTINGS.redis_url)
    job_timeout = 120
    poll_delay = SETTINGS.worker_poll_seconds
    max_tries = 8
    keep_result = 3600
    # arq logs job arguments at INFO; ours are ids only, never bodies.


def main() -> None:
    SETTINGS.require_tokens()
    configure_logging(SETTINGS.log_level)
    metrics_port = int(__import__("os").environ.get("NUDGE_WORKER_METRICS_PORT", "0"))
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    asyncio.set_event_loop(asyncio.new_event_loop())
    # arq's run_worker(WorkerSettings), with a worker that survives a Redis outage
    ResilientWorker(**get_kwargs(WorkerSettings)).run()  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
