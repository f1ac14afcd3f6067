"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

pytest_plugins = ["tests.support.fixtures"]


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A started fake OpenAI upstream; `fake_openai.base_url` has no /v1 suffix."""
    fake = FakeOpenAI()
    runner, fake.base_url = await start_fake(fake)
    yield fake
    await runner.cleanup()
