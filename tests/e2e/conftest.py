"""The harness of the proof suites, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """Parts started through it are killed when the test ends."""
    with Harness(tmp_path) as parts:
        yield parts
