"""`trigger schedule RULE [--from TIME] [-n N]`: the next fire times, as the daemon fires them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.test_cronmath import DST_TABLE
from trigger.cli import main


def write_rule(directory: Path, schedules: list[str], timezone: str | None = None) -> Path:
    cron: dict[str, object] = {"schedules": schedules}
    if timezone is not None:
        cron["timezone"] = timezone
    rules = [
        {
            "apiVersion": "trigger/v1",
            "kind": "Rule",
            "metadata": {"name": "report"},
            "spec": {"source": {"cron": cron}, "workflow": {"template": "report"}},
        },
        {
            "apiVersion": "trigger/v1",
            "kind": "Rule",
            "metadata": {"name": "hook"},
            "spec": {"source": {"webhook": {"path": "/hooks/x"}}, "workflow": {"template": "x"}},
        },
    ]
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump_all(rules))
    return path


def schedule(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["schedule", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.mark.parametrize(("zone", "text", "after", "expected"), DST_TABLE)
def test_prints_the_dst_tables(  # noqa: PLR0917 - fixtures plus one argument per column
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    zone: str,
    text: str,
    after: str,
    expected: list[str],
) -> None:
    """The printed times are the fire times of the DST tables, one per line, with offsets."""
    rules = write_rule(tmp_path, [text], zone)
    code, lines, _ = schedule(
        capsys, "report", "--rules", str(rules), "--from", after, "-n", str(len(expected))
    )
    assert (code, lines) == (0, expected)


def test_from_without_offset_is_read_in_the_rules_timezone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from without an offset is a wall time in the rule's timezone."""
    rules = write_rule(tmp_path, ["30 2 * * *"], "Europe/Berlin")
    code, lines, _ = schedule(
        capsys, "report", "--rules", str(rules), "--from", "2025-03-30T00:00", "-n", "2"
    )
    assert (code, lines) == (0, ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"])


def test_several_schedules_and_default_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several schedules merge (one line per instant); the timezone defaults to UTC."""
    rules = write_rule(tmp_path, ["0 * * * *", "*/30 * * * *"])
    code, lines, _ = schedule(
        capsys, "report", "--rules", str(rules), "--from", "2025-01-01T00:00:00Z", "-n", "3"
    )
    assert (code, lines) == (
        0,
        ["2025-01-01T00:30:00+00:00", "2025-01-01T01:00:00+00:00", "2025-01-01T01:30:00+00:00"],
    )


def test_default_count_is_ten_from_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --from and -n, ten future times are printed."""
    rules = write_rule(tmp_path, ["@hourly"], "Asia/Shanghai")
    code, lines, _ = schedule(capsys, "report", "--rules", str(rules))
    assert code == 0
    assert len(lines) == 10 and all(line.endswith(":00:00+08:00") for line in lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no rule named 'nope'"),
        (["hook"], "not a cron rule"),
        (["report", "--from", "yesterday"], "cannot parse time"),
        (["report", "-n", "0"], "-n must be at least 1"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """An unknown or non-cron rule, a bad --from or -n exits 2 with a message."""
    rules = write_rule(tmp_path, ["0 2 * * *"])
    code, lines, err = schedule(capsys, *args, "--rules", str(rules))
    assert (code, lines) == (2, [])
    assert message in err


def test_invalid_rules_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rule files that do not load exit 1, as validate does."""
    rules = write_rule(tmp_path, ["61 * * * *"])
    code, lines, err = schedule(capsys, "report", "--rules", str(rules))
    assert (code, lines) == (1, [])
    assert "schedules[0]" in err


def test_runs_as_a_command(tmp_path: Path) -> None:
    """`python -m trigger.cli schedule` prints the times and exits 0."""
    rules = write_rule(tmp_path, ["0 2 * * *"], "Asia/Shanghai")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trigger.cli",
            "schedule",
            "report",
            "--rules",
            str(rules),
            "--from",
            "2025-01-01T00:00:00+08:00",
            "-n",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout) == (
        0,
        "2025-01-01T02:00:00+08:00\n2025-01-02T02:00:00+08:00\n",
    )
