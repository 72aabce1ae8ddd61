"""Shared test helpers: the Argo schema validator and rule-file writers."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_SCHEMA = REPO.parent / "shared" / "argo" / "schema.json"
EXAMPLE_EVENTS = REPO / "trigger" / "examples" / "events"
EXAMPLE_RULES = REPO / "trigger" / "examples" / "rules"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


class WorkflowChecker:
    """Validates Workflow objects against hera's models and, when present, Argo's schema."""

    def __init__(self) -> None:
        from hera.workflows.models import Workflow as HeraWorkflow

        self._hera = HeraWorkflow
        self._schema = None
        if SHARED_SCHEMA.exists():
            from jsonschema import Draft202012Validator

            definitions = json.loads(SHARED_SCHEMA.read_text())["definitions"]
            self._schema = Draft202012Validator(
                {
                    "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.Workflow",
                    "definitions": definitions,
                }
            )

    def __call__(self, workflow: dict[str, Any]) -> None:
        self._hera.model_validate(workflow)
        if self._schema is not None:
            errors = [f"{list(e.path)}: {e.message}" for e in self._schema.iter_errors(workflow)]
            assert not errors, errors


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="run the proof suites (tests/e2e) at full scale instead of their short form",
    )


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    """True under `pytest --long`: proof suites use their full volumes, outages and kills."""
    return bool(request.config.getoption("--long"))


@pytest.fixture(scope="session")
def valid_workflow() -> WorkflowChecker:
    return WorkflowChecker()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    from tests.daemon import free_port

    return free_port()


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML text (dedented) as a rule file and return its path."""

    def write(text: str, name: str = "rules.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return write
