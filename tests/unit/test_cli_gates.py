"""`trigger match` over a set of event files: gates fire once complete, else say what lacks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from tests.conftest import EXAMPLE_RULES, WorkflowChecker
from tests.unit.test_cli import trigger


def day_files(tmp_path: Path, day: str, hours: range, *, marker: bool) -> list[str]:
    """EventBridge files for a day's hourly CSVs (and its marker) in the example bucket."""
    keys = [f"sales/{day}/{h:02d}.csv" for h in hours] + (
        [f"sales/{day}/_SUCCESS"] if marker else []
    )
    paths = []
    for index, key in enumerate(keys):
        path = tmp_path / f"{day}-{index}.json"
        event = {
            "specversion": "1.0",
            "id": f"{day}-{index}",
            "source": "acs.oss",
            "type": "oss:ObjectCreated:PutObject",
            "time": f"{day}T00:{index:02d}:00Z",
            "aliyunaccountid": "1234567890123456",
            "aliyunregionid": "cn-hangzhou",
            "data": {
                "oss": {
                    "bucket": {"name": "raw-data"},
                    "object": {"key": key, "size": 10, "eTag": f"E{index:030d}"},
                }
            },
        }
        path.write_text(json.dumps(event))
        paths.append(str(path))
    return paths


def test_match_fires_the_example_gate_once_complete(
    tmp_path: Path, valid_workflow: WorkflowChecker
) -> None:
    """24 hourly files and the marker, in any order, match as one valid nightly-load."""
    files = day_files(tmp_path, "2025-06-01", range(24), marker=True)
    random.Random(3).shuffle(files)
    result = trigger("match", "--rules", str(EXAMPLE_RULES), *files, *files[:2])
    assert result.returncode == 0, result.stderr
    [workflow] = [d for d in yaml.safe_load_all(result.stdout) if d]
    valid_workflow(workflow)
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params["day"] == "2025-06-01" and len(params["files"].split(",")) == 24
    assert "waiting for" not in result.stderr


def test_match_explains_what_a_gate_still_lacks(tmp_path: Path) -> None:
    """An incomplete set prints no Workflow and names the missing members on stderr."""
    files = day_files(tmp_path, "2025-06-01", range(20), marker=False)
    result = trigger("match", "--rules", str(EXAMPLE_RULES), *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        "gate nightly-load key 'sales/2025-06-01': waiting for hourly (4 of 24), marker (1 of 1); "
        "window ends 2025-06-01T06:00:00Z" in result.stderr
    )
