"""`trigger match` over a set of event files: gates fire once complete, else say what lacks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_RULES, WorkflowChecker
from tests.unit.test_cli import trigger
from trigger.decoders.detect import decode_file
from trigger.submit.deadletter import DeadLetter, encode


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


def test_explain_shows_a_gate_as_one_rule_with_its_members(tmp_path: Path) -> None:
    """--explain says once why the gate did not take an event: each member's reason."""
    [path] = day_files(tmp_path, "2025-06-01", range(1), marker=False)
    event = json.loads(Path(path).read_text())
    event["data"]["oss"]["object"]["key"] = "sales/2025-06-01/notes.txt"
    Path(path).write_text(json.dumps(event))
    result = trigger("match", "--explain", "--rules", str(EXAMPLE_RULES), path)
    [line] = [line for line in result.stderr.splitlines() if "nightly-load" in line]
    assert line.startswith(
        "event 2025-06-01-0: rule nightly-load: no match: gate member hourly: "
    ), line
    assert "; member marker: " in line and "nightly-load." not in line


def test_validate_counts_a_gate_once() -> None:
    """The shipped rules are 9 as written: the nightly-load gate is one of them."""
    result = trigger("validate", "--rules", str(EXAMPLE_RULES))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "ok: 9 rule(s) in 6 file(s): 7 active, 2 idle"


def test_fire_a_gate_with_its_parameters(tmp_path: Path) -> None:
    """`fire GATE -p …` creates the gate rule's Workflow with the parameters given."""
    result = trigger(
        "fire", "--rules", str(EXAMPLE_RULES), "--sink", "stdout", "nightly-load",
        "-p", "day=2025-06-01", "-p", "files=a.csv,b.csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    *manifest, name = result.stdout.strip().splitlines()  # the stdout sink, then the name
    workflow = yaml.safe_load("\n".join(manifest).removeprefix("---"))
    assert workflow["metadata"]["name"] == name
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params == {"day": "2025-06-01", "files": "a.csv,b.csv"}
    assert workflow["metadata"]["labels"]["trigger.dev/rule"] == "nightly-load"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["fire", "nightly-load"], "rule nightly-load: parameters day, files are templates (they need an event): pass -p day=VALUE -p files=VALUE"),
        (["fire", "nightly-load.marker"], "rule nightly-load.marker is member 'marker' of the gate nightly-load, which creates no Workflow of its own: fire the gate: trigger fire nightly-load"),
        (["backfill", "nightly-load.hourly", "--from", "2025-06-01", "--to", "2025-06-02"], "rule nightly-load.hourly is a member of the gate nightly-load: backfill takes cron and OSS rules, not gate members"),
        (["backfill", "nightly-load", "--from", "2025-06-01", "--to", "2025-06-02"], "rule nightly-load is a gate: backfill takes cron and OSS rules"),
    ],
)  # fmt: skip
def test_fire_and_backfill_say_why_not_for_gates(argv: list[str], says: str) -> None:
    """A gate without its templated parameters, a member, a gate backfill: exit 2, why."""
    result = trigger(argv[0], "--rules", str(EXAMPLE_RULES), "--sink", "stdout", *argv[1:])
    assert result.returncode == 2
    assert result.stderr.strip() == f"trigger: error: {says}"


def test_replay_says_why_a_gate_letter_is_not_replayed(tmp_path: Path) -> None:
    """A gate's timeout letter and a member's letter each fail again, saying why."""
    [path] = day_files(tmp_path, "2025-06-01", range(1), marker=False)
    [event] = decode_file(Path(path))
    when = event.time
    letters = tmp_path / "dead.jsonl"
    letters.write_bytes(
        b"".join(
            encode(DeadLetter.of(event, rule=rule, error=error, message="m", time=when)) + b"\n"
            for rule, error in (("nightly-load", "GateTimeout"), ("nightly-load.hourly", "GateStateTooLarge"))
        )
    )  # fmt: skip
    result = trigger("replay", str(letters), "--rules", str(EXAMPLE_RULES), "--sink", "stdout")
    assert result.returncode == 1
    assert "failed again: GateNotReplayed: rule nightly-load is a gate" in result.stdout
    assert (
        "failed again: GateNotReplayed: rule nightly-load.hourly is member 'hourly' of the "
        "gate nightly-load: events of gates are not replayed" in result.stdout
    )
