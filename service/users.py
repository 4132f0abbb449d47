"""People who use the console and the CLI, with their role and an argon2id password hash.

The console (sessions, login throttling, CSRF) builds on this; here is what every authorisation
check needs: who the person is, that they know their password, and what their role allows.
"""

from __future__ import annotations

import re
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from service.keys import Keys

ROLES = ("agent", "supervisor", "manager", "admin")
_USERNAME_RE = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


class UserError(Exception):
    """Unknown user, wrong password, bad role or username: the message says which."""


class Users:
    def __init__(self, redis: Redis, keys: Keys):
        self.redis = redis
        self.keys = keys

    async def add(self, username: str, role: str, password: str) -> None:
        if not _USERNAME_RE.match(username):
            raise UserError("username: 2-32 characters, lower-case letters, digits, . _ -, "
                            "starting with a letter")
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if len(password) < 12:
            raise UserError("password: at least 12 characters")
        created = await self.redis.hsetnx(self.keys.user(username), "role", role)
        if not created:
            raise UserError(f"user {username} already exists")
        await self.redis.hset(self.keys.user(username),
                              mapping={"hash": _hasher.hash(password), "created": time.time()})
        await self.redis.sadd(self.keys.user_index, username)

    async def set_password(self, username: str, password: str) -> None:
        if len(password) < 12:
            raise UserError("password: at least 12 characters")
        if not await self.redis.exists(self.keys.user(username)):
            raise UserError(f"no user {username}")
        await self.redis.hset(self.keys.user(username), "hash", _hasher.hash(password))

    async def list(self) -> list[dict[str, str]]:
        """Every user: username, role, created, disabled (never the hash)."""
        names = sorted(_text(n) for n in await self.redis.smembers(self.keys.user_index))
        rows = []
        for name in names:
            data = {_text(k): _text(v) for k, v in (await self.redis.hgetall(self.keys.user(name))).items()}
            if data:
                rows.append({"username": name, "role": data.get("role", ""),
                             "created": data.get("created", ""), "disabled": data.get("disabled", "")})
        return rows

    async def disable(self, username: str) -> None:
        """The person may no longer log in; the console ends their sessions on their next
        request (it reads the user on every request)."""
        if not await self.redis.exists(self.keys.user(username)):
            raise UserError(f"no user {username}")
        await self.redis.hset(self.keys.user(username), "disabled", "1")

    async def enable(self, username: str) -> None:
        if not await self.redis.exists(self.keys.user(username)):
            raise UserError(f"no user {username}")
        await self.redis.hdel(self.keys.user(username), "disabled")

    async def active_role(self, username: str) -> str | None:
        """The role of a user who exists and is not disabled; None otherwise."""
        role, disabled = await self.redis.hmget(self.keys.user(username), ["role", "disabled"])
        if not role or disabled:
            return None
        return _text(role)

    async def role_of(self, username: str) -> str | None:
        role = await self.redis.hget(self.keys.user(username), "role")
        return role.decode() if role else None

    async def authenticate(self, username: str, password: str) -> str:
        """The user's role if the password is right; UserError otherwise (same words for an
        unknown user and a wrong password, so the answer tells an attacker nothing)."""
        stored = await self.redis.hget(self.keys.user(username), "hash")
        try:
            if stored is None:
                _hasher.hash(password)  # same work either way: no timing oracle for usernames
                raise VerificationError
            _hasher.verify(stored.decode(), password)
        except (VerificationError, InvalidHashError):
            raise UserError("unknown user or wrong password") from None
        role = await self.active_role(username)
        if role is None:
            raise UserError(f"{username} is disabled")
        return role


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
