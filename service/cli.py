"""`nudge`: the command line of Nudge (typer).

  nudge up                      start everything with the demo portfolio (what `make run` does)
  nudge train [--force]         train the engine model if its inputs changed
  nudge understand TEXT --lang  print the understanding contract's JSON for one reply
  nudge import FILE             import debtors (CSV or JSON)
  nudge remind DEBTOR           send the first reminder
  nudge chat --debtor ID        talk to the bot as a debtor, in the terminal
  nudge agent list|claim|reply|handback   the agent's side of a handoff
  nudge eval-nlu                intent F1 and recall per language on the held-out set
  nudge templates lint [--root DIR]   check every message template (exit 1 on an error)
  nudge privacy export|erase|retention   data protection: access, erasure, retention run
  nudge payments import FILE    record payments from a CSV (service/cli_arrangements.py)
  nudge events export|status    business events: export as CSV/JSONL, delivery to creditors
  nudge arrangements show DEBTOR   an arrangement, its schedule and the negotiation
  nudge report [--out DIR]      tones per segment: tables, report.json, charts (service/cli_report.py)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Optional

import aiohttp
import redis.asyncio as aioredis
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from service.cli_arrangements import arrangements_app, events_app, payments_app
from service.cli_campaigns import campaign_app, segments_app, tone_app
from service.cli_common import settings_or_exit as _settings
from service.cli_report import report_command
from service.settings import PROJECT_ROOT, Settings, SettingsError, ensure_local_secrets
from sim.cli import simulate_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Nudge: conversational collections.")
agent_app = typer.Typer(no_args_is_help=True, help="Take over escalated conversations.")
app.add_typer(agent_app, name="agent")
privacy_app = typer.Typer(no_args_is_help=True,
                          help="Data protection: export or erase a debtor, run retention.")
app.add_typer(privacy_app, name="privacy")
app.add_typer(payments_app, name="payments")
app.add_typer(events_app, name="events")
app.add_typer(arrangements_app, name="arrangements")
app.add_typer(campaign_app, name="campaign")
app.add_typer(segments_app, name="segments")
app.add_typer(tone_app, name="tone")
app.command("report")(report_command)
app.command("simulate")(simulate_command)
console = Console()
err = Console(stderr=True)

DEMO_PORTFOLIO = PROJECT_ROOT / "data" / "demo_portfolio.csv"


def _run(coro):
    return asyncio.run(coro)


# --- up ---------------------------------------------------------------------------------
@app.command()
def up(
    demo: bool = typer.Option(True, help="Load the demo portfolio."),
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes."),
    engines: int = typer.Option(1, min=1, max=4, help="Engine processes (about 1.2 GB each)."),
    gateways: int = typer.Option(1, min=1, max=8, help="Gateway processes (each on its own port; "
                                 "the first one is the public address)."),
    action_servers: int = typer.Option(1, min=1, max=4, help="Action server processes."),
    sandbox: bool = typer.Option(True, help="Send through local stand-ins for Twilio and a mail "
                                 "server instead of real providers (--no-sandbox for real ones, "
                                 "configured by environment)."),
) -> None:
    """Start Redis (if none answers), the engine, the action server, the gateway and the worker
    (and, by default, the sandbox providers: a fake Twilio API and a local mail catcher)."""
    from service.stack import Stack, StackError, sandbox_env

    base = _settings()
    secrets_now = ensure_local_secrets(base.state_dir)
    env = {**os.environ, **{k: v for k, v in secrets_now.items() if not os.environ.get(k)}}
    if sandbox:
        env = {**env, **sandbox_env(twilio_port=8090, smtp_port=2525, smtp_listen_port=2526)}
    settings = Settings.from_env(env)
    stack = Stack(settings, env)
    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start_redis_if_needed()
        if demo:
            report = _run(_import(settings, DEMO_PORTFOLIO, skip_bad_rows=False))
            console.print(f"demo portfolio: {report}")
            logins = _run(_demo_people(settings))
        if sandbox:
            stack.start_sandbox_providers()
        stack.start_services(workers=workers, engines=engines, gateways=gateways,
                             action_servers=action_servers)
        if len(stack.engine_urls) > 1 or len(stack.gateway_urls) > 1:
            console.print(f"engines: {', '.join(stack.engine_urls)}; gateways: "
                          f"{', '.join(stack.gateway_urls)}")
        if sandbox:
            console.print(f"sandbox: fake Twilio at {settings.twilio_api_url}, outbound mail "
                          f"kept in {settings.state_dir / 'mail'}, inbound SMTP on "
                          f"127.0.0.1:{settings.smtp_listen_port}")
        console.print(f"\n[bold green]Nudge is running.[/bold green] Simulator: "
                      f"{settings.public_url}/simulator  ·  console: {settings.public_url}/console"
                      f"  ·  metrics: {settings.public_url}/metrics")
        if demo:
            console.print(f"demo console logins (also in {logins}): " + ", ".join(
                f"{name} ({role})" for name, role in DEMO_PEOPLE.items())
                + f", password: {logins.read_text().split()[-1]}")
        console.print("Ctrl-C stops everything.\n")
        while not stopping:
            exited = stack.first_exited()
            if exited is not None:
                err.print(f"[red]{exited.name} exited with code {exited.process.returncode}; stopping[/red]")
                break
            time.sleep(0.5)
    except StackError as error:
        err.print(f"[red]could not start:[/red] {error}")
        stack.stop()
        raise typer.Exit(1) from None
    console.print("stopping...")
    stack.stop()
    console.print("stopped.")


# One person per role for trying the console; two managers so one can approve the other's edit.
DEMO_PEOPLE = {"alice": "agent", "bob": "agent", "sam": "supervisor", "maria": "manager",
               "max": "manager", "ada": "admin"}


async def _demo_people(settings: Settings) -> Path:
    """Create the demo console users once per checkout, all with one generated password kept
    in .run/console-users.txt (mode 600). Returns that file."""
    import secrets as token_source

    from service.keys import Keys
    from service.users import UserError, Users

    path = settings.state_dir / "console-users.txt"
    if path.exists():
        password = path.read_text().split()[-1]
    else:
        password = token_source.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("demo console users: " + " ".join(DEMO_PEOPLE) + "\npassword: " + password + "\n")
    client = aioredis.from_url(settings.redis_url)
    try:
        users = Users(client, Keys(settings.key_prefix))
        for name, role in DEMO_PEOPLE.items():
            try:
                await users.add(name, role, password)
            except UserError:
                await users.set_password(name, password)   # an older run's user: same password now
    finally:
        await client.aclose()
    return path


@app.command()
def train(force: bool = typer.Option(False, help="Train even if a model for these inputs exists.")) -> None:
    """Train the engine model (cached by a hash of config, domain and data)."""
    from service.engine_model import ensure_model

    console.print(str(ensure_model(force=force)))


# --- understand -----------------------------------------------------------------------
@app.command()
def understand(
    text: str,
    lang: str = typer.Option(..., "--lang", help="en, nl or de"),
    currency: Optional[str] = typer.Option(None, help="Currency for amounts that name none."),
    today: Optional[str] = typer.Option(None, help="Reference date (ISO) for relative dates."),
    start_engine: bool = typer.Option(False, "--start-engine",
                                      help="No engine running? Start one for this command (slow)."),
) -> None:
    """Print the understanding contract's JSON for one reply, through the live path."""
    if lang not in ("en", "nl", "de"):
        err.print("--lang must be en, nl or de")
        raise typer.Exit(2)
    reference = date.fromisoformat(today) if today else date.today()
    if not start_engine:
        print(_run(_understand(_settings(), text, lang, currency, reference)))
        return
    from service.settings import new_token
    from service.stack import Stack, free_port

    env = {**os.environ, "NUDGE_ENGINE_URL": f"http://127.0.0.1:{free_port()}",
           "NUDGE_ENGINE_TOKEN": new_token()}
    stack = Stack(Settings.from_env(env), env, quiet=True)
    try:
        stack.start_engine_only()
        print(_run(_understand(stack.settings, text, lang, currency, reference)))
    finally:
        stack.stop()


async def _understand(settings: Settings, text: str, lang: str, currency: str | None, today: date) -> str:
    from service.engine import EngineClient, EngineError
    from service.understanding import contract_json
    from service.understanding import understand as understand_reply

    async with EngineClient(settings.engine_url, settings.engine_token, timeout=30) as engine:
        try:
            result = await understand_reply(text, lang, engine, today=today, default_currency=currency)
        except EngineError as error:
            err.print(f"[red]the engine does not answer at {settings.engine_url}[/red] ({error}).\n"
                      "Start it with `make run` in another terminal, or add --start-engine.")
            raise typer.Exit(1) from None
    return contract_json(result, indent=2)


# --- import ---------------------------------------------------------------------------
@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    skip_bad_rows: bool = typer.Option(False, help="Import the good rows and report the bad ones."),
    dry_run: bool = typer.Option(False, help="Only check the file; write nothing."),
    as_of: Optional[str] = typer.Option(None, help="Date (ISO) days past due are counted from."),
) -> None:
    """Import debtors and their cases from CSV or JSON (idempotent upsert)."""
    reference = date.fromisoformat(as_of) if as_of else None
    if dry_run:
        from service.importer import ImportFileError, load_records, validate_records

        try:
            debtors, errors = validate_records(load_records(file), reference or date.today())
        except ImportFileError as error:
            debtors, errors = [], list(error.errors)
        for problem in errors:
            console.print(str(problem), highlight=False)
        console.print(f"{len(debtors)} valid debtor(s), {len(errors)} problem(s)")
        raise typer.Exit(1 if errors else 0)
    settings = _settings()
    report = _run(_import(settings, file, skip_bad_rows=skip_bad_rows, as_of=reference))
    for error in report.errors:
        err.print(f"[red]{error}[/red]", highlight=False)
    console.print(f"created {report.created}, updated {report.updated}, unchanged {report.unchanged}, "
                  f"skipped {report.skipped}")
    if report.rejected:
        err.print("nothing was imported (use --skip-bad-rows to import the good rows)")
        raise typer.Exit(1)


async def _import(settings: Settings, file: Path, *, skip_bad_rows: bool, as_of: date | None = None):
    from service.debtor_store import RedisDebtorStore
    from service.importer import import_file
    from service.keys import Keys

    client = aioredis.from_url(settings.redis_url)
    try:
        return await import_file(file, RedisDebtorStore(client, Keys(settings.key_prefix)),
                                 skip_bad_rows=skip_bad_rows, as_of=as_of)
    finally:
        await client.aclose()


# --- remind ---------------------------------------------------------------------------
@app.command()
def remind(
    debtor: str,
    channel: Optional[str] = typer.Option(None, help="sms, whatsapp or email (default: preferred)"),
    wait: float = typer.Option(20.0, help="Seconds to wait for the worker to send it (0: don't)."),
) -> None:
    """Send a debtor's first reminder (through the worker) and show it."""
    settings = _settings()
    print_entries = _run(_remind(settings, debtor, channel, wait))
    if not print_entries:
        raise typer.Exit(1)


async def _remind(settings: Settings, debtor_id: str, channel: str | None, wait: float) -> bool:
    async with aiohttp.ClientSession(base_url=settings.public_url) as http:
        async with http.post(f"/simulator/api/debtors/{debtor_id}/remind",
                             json={"channel": channel} if channel else {}) as response:
            body = await response.json(content_type=None)
            if response.status != 202:
                err.print(f"[red]{body.get('error', response.status)}[/red]")
                return False
        console.print(f"queued {body['queued']}")
        if wait:
            await _follow(http, debtor_id, after=None, until=time.monotonic() + wait, stop_after_out=True)
    return True


# --- chat -----------------------------------------------------------------------------
@app.command()
def chat(
    debtor: str = typer.Option(..., "--debtor"),
    channel: str = typer.Option("sms", "--channel"),
    remind_first: bool = typer.Option(True, "--remind/--no-remind", help="Start with the first reminder."),
    show_understanding: bool = typer.Option(True, "--understanding/--no-understanding"),
) -> None:
    """Talk to the bot as a debtor, through the same gateway and worker as real providers."""
    settings = _settings()
    _run(_chat(settings, debtor, channel, remind_first, show_understanding))


async def _chat(settings: Settings, debtor_id: str, channel: str, remind_first: bool, show: bool) -> None:
    async with aiohttp.ClientSession(base_url=settings.public_url) as http:
        async with http.get(f"/simulator/api/debtors/{debtor_id}/transcript") as response:
            if response.status != 200:
                err.print(f"[red]no debtor {debtor_id} (is `make run` running?)[/red]")
                return
            last = ((await response.json())["entries"] or [{}])[-1].get("id")
        if remind_first:
            await http.post(f"/simulator/api/debtors/{debtor_id}/remind", json={"channel": channel})
            last = await _follow(http, debtor_id, last, time.monotonic() + 20, show=show, stop_after_out=True)
        console.print("[dim]Type as the debtor; an empty line or Ctrl-D quits.[/dim]")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, _read_line)
            if not line:
                return
            async with http.post(f"/simulator/api/debtors/{debtor_id}/messages",
                                 json={"channel": channel, "body": line,
                                       "message_id": f"CLI{uuid.uuid4().hex}"}) as response:
                if response.status >= 400:
                    err.print(f"[red]{(await response.json()).get('error')}[/red]")
                    continue
            last = await _follow(http, debtor_id, last, time.monotonic() + 30, show=show,
                                 stop_after_out=True)


def _read_line() -> str:
    try:
        return input("you> ").strip()
    except EOFError:
        return ""


async def _follow(http: aiohttp.ClientSession, debtor_id: str, after: str | None, until: float, *,
                  show: bool = True, stop_after_out: bool = False) -> str | None:
    """Print new transcript entries until a bot reply arrived and things are quiet, or time is up."""
    quiet_since = None
    while time.monotonic() < until:
        params = {"after": after} if after else {}
        async with http.get(f"/simulator/api/debtors/{debtor_id}/transcript", params=params) as response:
            data = await response.json()
        for entry in data["entries"]:
            after = entry["id"]
            _print_entry(entry, show)
            if entry.get("kind") == "message" and entry.get("direction") == "out":
                quiet_since = time.monotonic()
            if entry.get("kind") == "event" and entry.get("name") in ("for_agent", "held"):
                quiet_since = time.monotonic()
        if stop_after_out and quiet_since and time.monotonic() - quiet_since > 0.8:
            return after
        await asyncio.sleep(0.2)
    return after


def _print_entry(entry: dict, show: bool) -> None:
    if entry.get("kind") == "message" and entry.get("direction") == "out":
        subject = f"[bold]{entry['subject']}[/bold]\n" if entry.get("subject") else ""
        console.print(f"[cyan]bot ({entry.get('channel')})>[/cyan] {subject}{entry['body']}", highlight=False)
    elif entry.get("kind") == "event" and entry.get("name") == "understood" and show:
        entities = json.dumps(entry.get("entities") or {}, ensure_ascii=False)
        console.print(f"[dim]  ↳ {entry['intent']} {entry['confidence']:.2f} {entities} "
                      f"({entry.get('source')})[/dim]", highlight=False)
    elif entry.get("kind") == "event" and entry.get("name") in ("handoff", "handed_back", "claimed", "opted_out"):
        detail = entry.get("reason") or entry.get("agent") or entry.get("channel") or ""
        console.print(f"[yellow]  ** {entry['name']} {detail}[/yellow]")


# --- agent ----------------------------------------------------------------------------
@agent_app.command("list")
def agent_list() -> None:
    """Conversations waiting for or owned by an agent, most urgent first."""
    settings = _settings()
    states = _run(_with_conversations(settings, lambda store: store.escalated()))
    table = Table("conversation", "reason", "agent", "channel", "language", "waiting")
    for s in states:
        waited = f"{(time.time() - s.waiting_since) / 60:.0f} min" if s.waiting_since else ""
        table.add_row(s.conversation_id, s.reason or "", s.agent or "-", s.channel or "", s.language or "", waited)
    console.print(table)


@agent_app.command("unknown")
def agent_unknown() -> None:
    """Senders we could not match to a debtor: they got a generic answer with no debt detail
    and wait here for a person to match them (newest first)."""
    settings = _settings()
    rows = _run(_with_conversations(settings, unknown_senders))
    table = Table("conversation", "channel", "last message", "messages")
    for row in rows:
        table.add_row(*row)
    console.print(table)


async def unknown_senders(store) -> list[tuple[str, str, str, str]]:
    ids = sorted(m.decode() for m in await store.redis.smembers(store.keys.unknown_senders))
    rows = []
    for conversation_id in ids:
        state = await store.redis.hgetall(store.keys.conversation(conversation_id))
        last = float(state.get(b"last_inbound", b"0") or 0)
        count = await store.redis.xlen(store.keys.transcript(conversation_id))
        rows.append((last, conversation_id, (state.get(b"channel") or b"").decode(),
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(last)) if last else "",
                     str(count)))
    return [row[1:] for row in sorted(rows, reverse=True)]


@agent_app.command("claim")
def agent_claim(conversation: str, agent: str = typer.Option(..., "--as", help="Your agent name.")) -> None:
    """Claim a conversation (only one agent can own it)."""
    from service.conversations import ClaimError

    settings = _settings()
    try:
        _run(_with_conversations(settings, lambda store: store.claim(conversation, agent)))
    except ClaimError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{agent} owns {conversation}")


@agent_app.command("reply")
def agent_reply(conversation: str, text: str, agent: str = typer.Option(..., "--as")) -> None:
    """Reply to the debtor on the channel they last used."""
    settings = _settings()
    try:
        decision = _run(_agent_reply(settings, conversation, text, agent))
    except LookupError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    if decision.verdict == "send":
        console.print("sent")
    elif decision.verdict == "defer":
        console.print(f"[yellow]held until {decision.until:%Y-%m-%d %H:%M} UTC: {decision.detail}[/yellow]")
    else:
        err.print(f"[red]not sent ({decision.reason}): {decision.detail}[/red]")
        raise typer.Exit(1)


@agent_app.command("handback")
def agent_handback(conversation: str, agent: str = typer.Option(..., "--as")) -> None:
    """Hand the conversation back to the bot."""
    settings = _settings()
    try:
        _run(_handback(settings, conversation, agent))
    except LookupError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{conversation} is back with the bot")


async def _with_conversations(settings: Settings, action):
    from service.conversations import ConversationStore
    from service.keys import Keys

    client = aioredis.from_url(settings.redis_url)
    try:
        return await action(ConversationStore(client, Keys(settings.key_prefix)))
    finally:
        await client.aclose()


async def _agent_reply(settings: Settings, conversation_id: str, text: str, agent: str):
    from service.agent import AgentDesk

    async with AgentDesk.connect(settings) as desk:
        return await desk.reply(conversation_id, agent, text)


async def _handback(settings: Settings, conversation_id: str, agent: str) -> None:
    from service.agent import AgentDesk

    async with AgentDesk.connect(settings) as desk:
        await desk.hand_back(conversation_id, agent)


# --- stop-states, preferences, people ---------------------------------------------------
stop_app = typer.Typer(help="Stop-states that pause automation (dispute, attorney, ...).")
prefs_app = typer.Typer(help="Contact preferences a debtor stated.")
users_app = typer.Typer(help="People who use the console and the CLI.")
app.add_typer(stop_app, name="stop")
app.add_typer(prefs_app, name="prefs")
app.add_typer(users_app, name="users")


def _password(prompt: str = "Password") -> str:
    return os.environ.get("NUDGE_PASSWORD") or typer.prompt(prompt, hide_input=True)


async def _with_rules(settings: Settings, action):
    from service.contact_rules import ContactConfig, ContactRules
    from service.keys import Keys

    client = aioredis.from_url(settings.redis_url)
    try:
        rules = ContactRules(client, Keys(settings.key_prefix),
                             ContactConfig.load(settings.policies_dir), settings.pseudonym_key)
        return await action(client, rules)
    finally:
        await client.aclose()


@stop_app.command("list")
def stop_list(debtor: str) -> None:
    """A debtor's stop-states, since when and why."""
    settings = _settings()
    states = _run(_with_rules(settings, lambda _c, rules: rules.stop_states.active(debtor)))
    table = Table("state", "since", "source", "by")
    for name, record in sorted(states.items()):
        since = datetime.fromtimestamp(record["since"]).strftime("%Y-%m-%d %H:%M")
        table.add_row(name, since, record.get("source", ""), record.get("by", ""))
    console.print(table if states else f"{debtor} has no stop-states")


@stop_app.command("lift")
def stop_lift(debtor: str, state: str, by: str = typer.Option(..., "--by", help="Your username."),
              note: str = typer.Option("", help="Why it may be lifted (kept in the audit log).")) -> None:
    """Lift a stop-state: only someone whose role the policy names may (password asked)."""
    from service.contact_rules import StopStateError
    from service.users import UserError, Users

    settings = _settings()
    password = _password()

    async def lift(client, rules):
        role = await Users(client, rules.keys).authenticate(by, password)
        await rules.stop_states.lift(debtor, state, by=by, role=role, note=note)

    try:
        _run(_with_rules(settings, lift))
    except (StopStateError, UserError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{state} lifted for {debtor}")


@prefs_app.command("set")
def prefs_set(debtor: str,
              not_before: str = typer.Option("", help="Earliest local time, HH:MM."),
              not_after: str = typer.Option("", help="Latest local time, HH:MM."),
              channels: str = typer.Option("", help="Only these channels, e.g. email or sms,email."),
              by: str = typer.Option(..., "--by", help="Who records it.")) -> None:
    """Record what the debtor asked for ("not before noon", "email only")."""
    from bot.core.contact_policy import Preferences

    mapping = {"not_before": not_before, "not_after": not_after, "channels": channels}
    try:
        Preferences.from_mapping(mapping)
    except ValueError as error:
        err.print(f"[red]not a time: {error}[/red]")
        raise typer.Exit(2) from None
    bad = set(filter(None, channels.split(","))) - {"sms", "whatsapp", "email"}
    if bad:
        err.print(f"[red]unknown channels {sorted(bad)}[/red]")
        raise typer.Exit(2)

    async def store(client, rules):
        await client.delete(rules.keys.preferences(debtor))
        await client.hset(rules.keys.preferences(debtor),
                          mapping={k: v for k, v in mapping.items() if v} or {"set": "1"})
        await rules.audit.record(by, "preferences.set", debtor_id=debtor, **mapping)

    _run(_with_rules(_settings(), store))
    console.print(f"preferences recorded for {debtor}")


@users_app.command("add")
def users_add(username: str, role: str = typer.Option(..., help="agent, supervisor, manager or admin")) -> None:
    """Add a person (password asked, or NUDGE_PASSWORD)."""
    from service.users import UserError, Users

    settings = _settings()
    password = _password("Password (12+ characters)")

    async def add(client, rules):
        await Users(client, rules.keys).add(username, role, password)
        await rules.audit.record("cli", "user.add", username=username, role=role)

    try:
        _run(_with_rules(settings, add))
    except UserError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    console.print(f"{username} ({role}) added")


# --- privacy (service/privacy.py) -----------------------------------------------------
@privacy_app.command("export")
def privacy_export(
    debtor_id: str,
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON here (mode 600)."),
    by: str = typer.Option(..., "--by", help="Your username (the export is audited)."),
) -> None:
    """Everything held about a debtor, as JSON (a subject access request)."""
    from service.privacy import export_debtor

    settings = _settings()
    try:
        data = _run(_with_redis(settings, lambda r: export_debtor(r, settings, debtor_id, actor=by)))
    except (LookupError, SettingsError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    if out is None:
        print(text)
        return
    # It is personal data: readable by its owner only, created that way (no window).
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    os.chmod(out, 0o600)
    console.print(f"wrote {out}")


@privacy_app.command("erase")
def privacy_erase(
    debtor_id: str,
    by: str = typer.Option(..., "--by", help="Your username (recorded in the tombstone and audit)."),
    reason: str = typer.Option(..., "--reason", help="Why (e.g. the request's reference)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Erase a debtor everywhere; keep opt-out digests, pseudonymous audit, a tombstone."""
    from service.privacy import erase_debtor

    settings = _settings()
    if not yes and not typer.confirm(f"Erase every record of {debtor_id}? This cannot be undone"):
        raise typer.Exit(1)
    try:
        report = _run(_with_redis(settings, lambda r: erase_debtor(
            r, settings, debtor_id, actor=by, reason=reason)))
    except (LookupError, ValueError, RuntimeError, SettingsError) as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from None
    table = Table("record type", "deleted")
    for kind, count in sorted(report.deleted.items()):
        table.add_row(kind, str(count))
    console.print(table)
    kept = ", ".join(f"{k} {v}" for k, v in report.kept.items())
    state = "already erased; nothing left to delete" if report.already_erased else "erased"
    console.print(f"{debtor_id}: {state}. Kept: {kept}. Tombstone: {report.tombstone_key}")


@privacy_app.command("retention")
def privacy_retention(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only count what would be deleted."),
) -> None:
    """Delete what has outlived its period in policies/retention.yml (the worker does it daily)."""
    from service.privacy import RetentionPolicyError, load_retention_policy, run_retention

    settings = _settings()
    try:
        policy = load_retention_policy(settings)
    except RetentionPolicyError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    counts = _run(_with_redis(settings, lambda r: run_retention(
        r, settings, policy, time.time(), dry_run=dry_run)))
    table = Table("record type", "period (days)", "would delete" if dry_run else "deleted")
    for kind, count in counts.items():
        table.add_row(kind, str(policy.days[kind]), str(count))
    console.print(table)


async def _with_redis(settings: Settings, action):
    client = aioredis.from_url(settings.redis_url)
    try:
        return await action(client)
    finally:
        await client.aclose()


# --- evaluation -----------------------------------------------------------------------
@app.command("eval-nlu")
def eval_nlu(
    write: bool = typer.Option(True, help="Write docs/nlu-evaluation.md."),
) -> None:
    """Intent macro-F1 and per-intent recall per language on tests/nlu_eval (held out)."""
    from service.nlu_eval import evaluate_all

    settings = _settings()
    sys.exit(_run(evaluate_all(settings, console, write=write)))


# --- templates (service/template_lint.py) ----------------------------------------------
templates_app = typer.Typer(no_args_is_help=True, help="Check the message templates.")
app.add_typer(templates_app, name="templates")


@templates_app.command("lint")
def templates_lint(
    root: Path = typer.Option(PROJECT_ROOT / "message_templates", "--root", file_okay=False,
                              exists=True, help="The templates folder (with its catalogue.yml)."),
) -> None:
    """Lint every template: variables, opt-out line, disclosures, threat phrases, syntax."""
    from service.template_lint import CATALOGUE_NAME, CatalogueError, LintIssue, lint_all, load_catalogue

    extra: list[LintIssue] = []
    try:
        catalogue = load_catalogue(root / CATALOGUE_NAME)
    except CatalogueError as error:
        catalogue = None  # the checks that need no catalogue still run
        extra.append(LintIssue("error", "catalogue", str(error), CATALOGUE_NAME))
    report = lint_all(root, catalogue)
    if extra:
        report[CATALOGUE_NAME] = extra + report.get(CATALOGUE_NAME, [])
    _print_lint_report(report)
    if any(issue.level == "error" for issues in report.values() for issue in issues):
        raise typer.Exit(1)


def _print_lint_report(report: dict[str, list]) -> None:
    colours = {"error": "red", "warning": "yellow"}
    for template, issues in sorted(report.items()):
        for issue in issues:
            where = f"{template}:{issue.line}" if issue.line else template
            console.print(f"[{colours[issue.level]}]{issue.level}[/] {where} [bold]{issue.code}[/] "
                          f"{escape(issue.message)}", highlight=False, soft_wrap=True)
    counts = {level: sum(issue.level == level for issues in report.values() for issue in issues)
              for level in colours}
    console.print(f"{len(report)} file(s): {counts['error']} error(s), {counts['warning']} warning(s)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
