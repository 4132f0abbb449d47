"""One settings object, read once from the environment and validated at start-up.

Every process (gateway, worker, action server, CLI, supervisor) builds its `Settings` with
`Settings.from_env()`. A missing or malformed value stops the process with a message that
names the variable. Secrets are kept out of `repr` so they never reach a log line.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SettingsError(Exception):
    """A setting is missing or malformed; the message names it."""


def _int(env: dict[str, str], name: str, default: int, *, low: int = 0, high: int = 65535) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "nudge"
    engine_url: str = "http://127.0.0.1:5005"
    engine_token: str = field(default="", repr=False)
    engine_key_prefix: str = "nudgeengine"
    actions_port: int = 5055
    actions_token: str = field(default="", repr=False)
    # Keys the digests of addresses kept after erasure (suppressions) and audit pseudonyms.
    pseudonym_key: str = field(default="", repr=False)
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    queue_name: str = "nudge:queue"
    company_name: str = "Nudge Collections"
    payment_base_url: str = "https://pay.nudge.example/p"
    default_currency: str = "EUR"
    conversation_lock_seconds: float = 30.0
    engine_timeout_seconds: float = 30.0
    # How often an idle worker asks Redis for jobs. arq's default (0.5 s) put up to half a
    # second on every hop (webhook -> processing -> delivery): 0.75 s of a 0.8 s reply at
    # 5 messages/s (docs/performance.md). A poll is one ZRANGEBYSCORE.
    worker_poll_seconds: float = 0.02
    simulator_enabled: bool = True
    log_level: str = "INFO"
    templates_dir: Path = PROJECT_ROOT / "message_templates"
    policies_dir: Path = PROJECT_ROOT / "policies"
    state_dir: Path = PROJECT_ROOT / ".run"
    # --- providers (#3). Secrets from the environment only; never in repr or logs.
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    twilio_api_url: str = ""             # "" = Twilio itself; a URL = a fake (tests, sandbox)
    # Twilio's newer webhook signing (X-Twilio-Webhooks-Signature-Settings): the shared key.
    twilio_webhook_shared_key: str = field(default="", repr=False)
    # The base URL Twilio and SendGrid call us at (behind a proxy or tunnel, the public one):
    # webhook signatures are computed over it.
    webhook_base_url: str = "http://127.0.0.1:8080"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: str = "auto"          # auto | always | never
    smtp_validate_certs: bool = True
    sendgrid_api_key: str = field(default="", repr=False)
    sendgrid_api_url: str = "https://api.sendgrid.com"
    # SendGrid Inbound Parse security policy: the ECDSA public key (base64 DER or PEM) its
    # signatures are checked with. Empty: the route refuses every request.
    sendgrid_inbound_public_key: str = ""
    # Our own SMTP listener for inbound mail (self-hosting); 0 = off.
    smtp_listen_port: int = 0
    smtp_listen_host: str = "127.0.0.1"
    # --- business events and payments (#4). Creditors' signing secrets are named per creditor
    # in policies/creditors.yml (secret_env) and read from the environment by that name.
    # The secret payment senders sign the payment webhook with; empty: every call is refused.
    payment_webhook_secret: str = field(default="", repr=False)
    # Sends every creditor's events to this URL instead of policies/creditors.yml's (the
    # sandbox creditor of `make run` and the tests).
    creditor_events_url: str = ""
    # Signs the payment-page links (service/pay_links.py) and the page's session cookie.
    pay_link_secret: str = field(default="", repr=False)
    # The internal campaign API (service/campaign_api.py): Bearer token; empty: the API is off.
    api_token: str = field(default="", repr=False)
    # The payment page's cookie is sent over https only; off only for the local http sandbox.
    secure_cookies: bool = True
    # The web console (service/console/): a session ends after this long without a request,
    # and in any case this long after login; failed logins are counted per username and per
    # client address over the throttle window.
    console_idle_minutes: float = 30.0
    console_absolute_hours: float = 12.0
    login_max_failures_per_user: int = 5
    login_max_failures_per_address: int = 20
    login_throttle_minutes: float = 15.0
    creditor_webhook_timeout_seconds: float = 10.0      # one POST to a creditor, all in
    # A delivery claimed by a worker that died is taken over after this long.
    creditor_webhook_visibility_seconds: float = 60.0
    creditor_webhook_batch: int = 50                     # events per delivery round

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        # Tokens `make run` generated for this checkout, for CLI commands run beside it.
        for name, value in read_local_secrets(Path(env.get("NUDGE_STATE_DIR", PROJECT_ROOT / ".run"))).items():
            env.setdefault(name, value)
        redis_url = env.get("REDIS_URL", cls.redis_url)
        if urlparse(redis_url).scheme not in ("redis", "rediss", "unix"):
            raise SettingsError(f"REDIS_URL must be a redis:// URL, got {redis_url!r}")
        prefix = env.get("NUDGE_KEY_PREFIX", cls.key_prefix)
        engine_prefix = env.get("NUDGE_ENGINE_KEY_PREFIX", cls.engine_key_prefix)
        if not engine_prefix.isalnum():
            # Rasa silently ignores a non-alphanumeric tracker key prefix; refuse it here.
            raise SettingsError("NUDGE_ENGINE_KEY_PREFIX must be letters and digits only")
        gateway_port = _int(env, "NUDGE_GATEWAY_PORT", cls.gateway_port, low=1)
        return cls(
            redis_url=redis_url,
            key_prefix=prefix,
            # one engine, or several comma-separated (scale-out; service/engine.py)
            engine_url=",".join(url.strip().rstrip("/") for url in
                                env.get("NUDGE_ENGINE_URL", cls.engine_url).split(",") if url.strip()),
            engine_token=env.get("NUDGE_ENGINE_TOKEN", ""),
            engine_key_prefix=engine_prefix,
            actions_port=_int(env, "NUDGE_ACTIONS_PORT", cls.actions_port, low=1),
            actions_token=env.get("NUDGE_ACTIONS_TOKEN", ""),
            pseudonym_key=env.get("NUDGE_PSEUDONYM_KEY", ""),
            gateway_host=env.get("NUDGE_GATEWAY_HOST", cls.gateway_host),
            gateway_port=gateway_port,
            public_url=env.get("NUDGE_PUBLIC_URL", f"http://127.0.0.1:{gateway_port}").rstrip("/"),
            queue_name=env.get("NUDGE_QUEUE_NAME", f"{prefix}:queue"),
            company_name=env.get("NUDGE_COMPANY_NAME", cls.company_name),
            payment_base_url=env.get("NUDGE_PAYMENT_BASE_URL", cls.payment_base_url),
            default_currency=env.get("NUDGE_DEFAULT_CURRENCY", cls.default_currency),
            conversation_lock_seconds=_float(env, "NUDGE_CONVERSATION_LOCK_SECONDS", 30.0),
            engine_timeout_seconds=_float(env, "NUDGE_ENGINE_TIMEOUT_SECONDS", 30.0),
            worker_poll_seconds=_float(env, "NUDGE_WORKER_POLL_SECONDS", 0.02),
            simulator_enabled=env.get("NUDGE_SIMULATOR", "1") not in ("0", "false", "no"),
            log_level=env.get("NUDGE_LOG_LEVEL", "INFO").upper(),
            templates_dir=Path(env.get("NUDGE_TEMPLATES_DIR", str(PROJECT_ROOT / "message_templates"))),
            state_dir=Path(env.get("NUDGE_STATE_DIR", str(PROJECT_ROOT / ".run"))),
            policies_dir=Path(env.get("NUDGE_POLICIES_DIR", str(PROJECT_ROOT / "policies"))),
            twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            twilio_auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            twilio_api_url=env.get("NUDGE_TWILIO_API_URL", "").rstrip("/"),
            twilio_webhook_shared_key=env.get("TWILIO_WEBHOOK_SHARED_KEY", ""),
            webhook_base_url=env.get("NUDGE_WEBHOOK_BASE_URL",
                                     env.get("NUDGE_PUBLIC_URL", f"http://127.0.0.1:{gateway_port}")
                                     ).rstrip("/"),
            smtp_host=env.get("NUDGE_SMTP_HOST", cls.smtp_host),
            smtp_port=_int(env, "NUDGE_SMTP_PORT", cls.smtp_port, low=1),
            smtp_username=env.get("NUDGE_SMTP_USERNAME", ""),
            smtp_password=env.get("NUDGE_SMTP_PASSWORD", ""),
            smtp_starttls=_choice(env, "NUDGE_SMTP_STARTTLS", "auto", ("auto", "always", "never")),
            smtp_validate_certs=env.get("NUDGE_SMTP_VALIDATE_CERTS", "1") not in ("0", "false", "no"),
            sendgrid_api_key=env.get("SENDGRID_API_KEY", ""),
            sendgrid_api_url=env.get("NUDGE_SENDGRID_API_URL", cls.sendgrid_api_url).rstrip("/"),
            sendgrid_inbound_public_key=env.get("NUDGE_SENDGRID_INBOUND_PUBLIC_KEY", ""),
            smtp_listen_port=_int(env, "NUDGE_SMTP_LISTEN_PORT", 0),
            smtp_listen_host=env.get("NUDGE_SMTP_LISTEN_HOST", "127.0.0.1"),
            payment_webhook_secret=env.get("NUDGE_PAYMENT_WEBHOOK_SECRET", ""),
            pay_link_secret=env.get("NUDGE_PAY_LINK_SECRET", ""),
            api_token=env.get("NUDGE_API_TOKEN", ""),
            creditor_events_url=env.get("NUDGE_CREDITOR_EVENTS_URL", ""),
            secure_cookies=env.get("NUDGE_SECURE_COOKIES", "true").lower() not in ("0", "false", "no"),
            console_idle_minutes=_float(env, "NUDGE_CONSOLE_IDLE_MINUTES", 30.0),
            console_absolute_hours=_float(env, "NUDGE_CONSOLE_ABSOLUTE_HOURS", 12.0),
            login_max_failures_per_user=_int(env, "NUDGE_LOGIN_MAX_FAILURES_PER_USER", 5, low=1, high=1000),
            login_max_failures_per_address=_int(env, "NUDGE_LOGIN_MAX_FAILURES_PER_ADDRESS", 20,
                                                low=1, high=100000),
            login_throttle_minutes=_float(env, "NUDGE_LOGIN_THROTTLE_MINUTES", 15.0),
            creditor_webhook_timeout_seconds=_float(
                env, "NUDGE_CREDITOR_WEBHOOK_TIMEOUT_SECONDS", 10.0),
            creditor_webhook_visibility_seconds=_float(
                env, "NUDGE_CREDITOR_WEBHOOK_VISIBILITY_SECONDS", 60.0),
            creditor_webhook_batch=_int(env, "NUDGE_CREDITOR_WEBHOOK_BATCH", 50, low=1, high=1000),
        )

    def require_twilio(self) -> None:
        """The worker and gateway need Twilio's credentials (real or the sandbox's)."""
        if not self.twilio_account_sid or not self.twilio_auth_token:
            raise SettingsError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set "
                                "(`make run` makes sandbox ones in .run/secrets.env)")

    def require_tokens(self) -> None:
        """Processes that talk to the engine or action server call this at start-up."""
        if not self.engine_token:
            raise SettingsError("NUDGE_ENGINE_TOKEN is not set (the engine's API token)")
        if not self.actions_token:
            raise SettingsError("NUDGE_ACTIONS_TOKEN is not set (the action server's token)")

    @property
    def engine_urls(self) -> list[str]:
        """Every engine process's URL (NUDGE_ENGINE_URL may list several)."""
        return self.engine_url.split(",")

    @property
    def redis_parts(self) -> tuple[str, int, int]:
        """Host, port and db of REDIS_URL, for the engine's endpoints.yml."""
        parsed = urlparse(self.redis_url)
        db = int((parsed.path or "/0").lstrip("/") or 0)
        return parsed.hostname or "127.0.0.1", parsed.port or 6379, db


def new_token() -> str:
    return secrets.token_urlsafe(32)


SECRETS_FILE = "secrets.env"


def read_local_secrets(state_dir: Path) -> dict[str, str]:
    path = state_dir / SECRETS_FILE
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs}


def ensure_local_secrets(state_dir: Path) -> dict[str, str]:
    """Tokens for the engine and action server and the pseudonym key, made once per checkout,
    readable by its owner only."""
    secrets_now = read_local_secrets(state_dir)
    changed = False
    # The two webhook secrets sign events to the sandbox creditor (sandbox/fake_creditor.py)
    # and payments posted to us; real deployments set their own in the environment.
    for name in ("NUDGE_ENGINE_TOKEN", "NUDGE_ACTIONS_TOKEN", "NUDGE_PSEUDONYM_KEY",
                 "NUDGE_CREDITOR_WEBHOOK_SECRET", "NUDGE_PAYMENT_WEBHOOK_SECRET",
                 "NUDGE_PAY_LINK_SECRET", "NUDGE_API_TOKEN"):
        if not secrets_now.get(name):
            secrets_now[name] = new_token()
            changed = True
    # A sandbox Twilio account for the local fake Twilio server (sandbox/fake_twilio.py):
    # `make run` talks to it unless real credentials are in the environment.
    if not secrets_now.get("TWILIO_ACCOUNT_SID"):
        secrets_now["TWILIO_ACCOUNT_SID"] = "AC" + secrets.token_hex(16)
        secrets_now["TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
        changed = True
    if changed:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / SECRETS_FILE
        path.touch(mode=0o600, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in secrets_now.items()))
    return secrets_now
