"""Typed keys for what the gateway keeps on its aiohttp Application (house style 2)."""

from __future__ import annotations

from aiohttp import web
from arq.connections import ArqRedis

from service.conversations import ConversationStore
from service.debtor_store import RedisDebtorStore
from service.inbound import InboundStore
from service.keys import Keys
from service.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", ArqRedis)
DEBTORS = web.AppKey("debtors", RedisDebtorStore)
CONVERSATIONS = web.AppKey("conversations", ConversationStore)
INBOUND = web.AppKey("inbound", InboundStore)
