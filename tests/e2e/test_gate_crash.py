"""A gate through a real daemon killed with SIGKILL after each member: one Workflow, all members."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import yaml

from tests.component.test_gate_pipeline import HOURS, RULES
from tests.daemon import DaemonProcess, wait_for


def delivery(key: str, index: int) -> bytes:
    """One EventBridge delivery of a created object in the gate's bucket."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"eb-{index}",
            "source": "acs.oss",
            "type": "oss:ObjectCreated:PutObject",
            "time": "2026-12-06T01:00:00Z",
            "aliyunaccountid": "1234567890123456",
            "aliyunregionid": "cn-hangzhou",
            "data": {
                "oss": {
                    "bucket": {"name": "raw"},
                    "object": {"key": key, "size": 1, "eTag": f"{index:032X}"},
                }
            },
        }
    ).encode()


def test_sigkill_after_each_member_fires_exactly_once(tmp_path: Path) -> None:
    """Each member acknowledged (2xx), then the daemon SIGKILLed: one Workflow, none missing."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    keys = [f"sales/2026-12-06/{h:02d}.csv" for h in range(HOURS)] + ["sales/2026-12-06/_SUCCESS"]
    daemon = DaemonProcess(tmp_path, rules)
    headers = {"Content-Type": "application/cloudevents+json"}
    for index, key in enumerate(keys):
        daemon.start()
        if index:  # the previous member again, as a sender that saw no answer would
            previous = delivery(keys[index - 1], index - 1)
            assert daemon.post("/oss/eventbridge", previous, headers).status == 200
        assert daemon.post("/oss/eventbridge", delivery(key, index), headers).status == 200
        daemon.signal(signal.SIGKILL)
        daemon.wait()
    files = daemon.workflow_files()
    assert len(files) == 1, files
    workflow = yaml.safe_load(files[0].read_text())
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params["files"] == ",".join(keys[:HOURS])


def test_on_timeout_fire_fires_what_came_through_a_daemon(tmp_path: Path) -> None:
    """`onTimeout: fire`: two of the files and no marker, then the window passes — the
    daemon's sweeper fires one Workflow with what came and `gate.timedOut` true."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.replace("    window: 1h\n", "    window: 1s\n    onTimeout: fire\n").replace(
            "      day:", '      timedOut: "{{ gate.timedOut }}"\n      day:'
        )
    )
    daemon = DaemonProcess(tmp_path, rules, env={"TRIGGER_GATES__SWEEP_INTERVAL": "100ms"})
    headers = {"Content-Type": "application/cloudevents+json"}
    keys = ["sales/2026-12-06/00.csv", "sales/2026-12-06/01.csv"]
    daemon.start()
    try:
        for index, key in enumerate(keys):
            assert daemon.post("/oss/eventbridge", delivery(key, index), headers).status == 200
        files = wait_for(daemon.workflow_files, what="the timed-out gate's Workflow")
    finally:
        daemon.stop()
    assert len(daemon.workflow_files()) == 1
    workflow = yaml.safe_load(files[0].read_text())
    params = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    assert params == {"timedOut": "true", "day": "2026-12-06", "files": ",".join(keys)}
