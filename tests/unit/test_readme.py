"""The README stays honest: every setting is documented, and its commands exist."""

from __future__ import annotations

from pydantic import BaseModel

from tests.conftest import REPO
from trigger.settings import KafkaCluster, Settings


def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if isinstance(info.default, BaseModel):
            names.extend(fields(type(info.default), f"{prefix}{name}."))
        else:
            names.append(prefix + name)
    return names


def test_every_setting_is_in_the_readme() -> None:
    """Each settings field appears in the README's configuration table."""
    readme = (REPO / "README.md").read_text()
    wanted = fields(Settings) + fields(KafkaCluster, "kafka.clusters.NAME.")
    missing = [name for name in wanted if f"| `{name}` |" not in readme]
    assert not missing, missing


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block runs the daemon and then the tests, as CI does."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    assert "trigger run" in block and "pytest" in block
    assert "pytest -q" in (REPO / ".ci" / "run").read_text()
