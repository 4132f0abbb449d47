"""The fake Twilio server, served on a free port, and a real twilio SDK client pointed at it.

Each test module names its own account: ``ACCOUNT`` and ``TOKEN`` at module level.
"""

from __future__ import annotations

import pytest
import pytest_asyncio

from channels.twilio_api import close_twilio_client, make_twilio_client
from sandbox.fake_twilio import (
    DEFAULT_SPEC,
    FAKE_TWILIO,
    FakeTwilio,
    create_fake_twilio,
)


@pytest_asyncio.fixture
async def server(aiohttp_server, request):
    module = request.module
    return await aiohttp_server(create_fake_twilio(DEFAULT_SPEC, {module.ACCOUNT: module.TOKEN},
                                                   callback_delay=0.01))


@pytest.fixture
def fake(server) -> FakeTwilio:
    return server.app[FAKE_TWILIO]


@pytest.fixture
def base_url(server) -> str:
    return f"http://{server.host}:{server.port}"


@pytest_asyncio.fixture
async def client(base_url, request):
    client = make_twilio_client(request.module.ACCOUNT, request.module.TOKEN, base_url, timeout=5)
    yield client
    await close_twilio_client(client)
