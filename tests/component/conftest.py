"""Fixtures the component tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from trigger.testing.kafka import KafkaBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    """A real Kafka-protocol broker (tansu) per test module, stopped after it."""
    kafka = KafkaBroker()
    asyncio.run(kafka.start())
    try:
        yield kafka
    finally:
        kafka.stop()
