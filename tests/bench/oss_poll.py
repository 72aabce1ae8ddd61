"""Benchmark: the OSS poller under a burst of uploads (the reported 105,000 objects in 188 s).

Runs the OSS test server and `trigger run` as subprocesses (local sink, file state, one
poll rule, interval 1 s, default `oss.poll` settings) while UPLOADERS threads put OBJECTS
objects through oss2 as fast as they can (or at RATE per second). Then waits until every
object has its Workflow, or until nothing new was created for STALL seconds, and reports:
the upload rate, Workflows created and duplicates (from /status), objects never fired,
the largest poll checkpoint seen in the state file while it ran, the checkpoint metrics,
and whether /readyz stayed 200. Writes tests/bench/results/oss_poll.json.

Run: .venv/bin/python -m tests.bench.oss_poll [OBJECTS]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import oss2

from tests.daemon import DaemonProcess
from trigger.core.state import load_state_file
from trigger.errors import ConfigError

RESULTS = Path(__file__).parent / "results"
OBJECTS = 105_000
UPLOADERS = 8
RATE = 0.0  # uploads per second over all threads; 0: as fast as they go
STALL = 90.0  # seconds without a new Workflow after the uploads ended: give up
AK, SK, BUCKET = "AKIDBENCH", "SKBENCH", "raw-data"


def rule(endpoint: str) -> str:
    return f"""
apiVersion: trigger/v1
kind: Rule
metadata: {{name: burst}}
spec:
  source:
    oss:
      bucket: {BUCKET}
      key: {{prefix: in/}}
      poll:
        endpoint: {endpoint}
        region: cn-hangzhou
        interval: 1s
        existing: fire
        credentials: {{accessKeyIdEnv: OSS_AK, accessKeySecretEnv: OSS_SK}}
  workflow:
    template: ingest
    namespace: bench
    parameters: {{key: "{{{{ event.key }}}}"}}
"""


def start_oss() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "trigger.testing.ossserver", "--port", "0",
               "--bucket", BUCKET, "--ak", AK, "--sk", SK]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    match = re.match(r"READY (\S+)", process.stdout.readline())
    assert match, "the OSS server did not start"
    return process, match.group(1)


def upload(endpoint: str, total: int) -> float:
    """Put `total` objects from UPLOADERS threads; returns the seconds it took."""
    counter = iter(range(total))
    lock = threading.Lock()
    begin = time.monotonic()

    def work() -> None:
        bucket = oss2.Bucket(oss2.AuthV4(AK, SK), endpoint, BUCKET, region="cn-hangzhou")
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            if RATE:
                time.sleep(max(0.0, begin + number / RATE - time.monotonic()))
            bucket.put_object(f"in/{number:07d}.csv", b"%d\n" % number)

    threads = [threading.Thread(target=work) for _ in range(UPLOADERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - begin


def checkpoint_bytes(state: Path) -> int:
    try:
        data = load_state_file(state)  # the snapshot and its journal
    except (OSError, ConfigError):
        return 0
    sizes = [
        len(json.dumps(v, sort_keys=True, separators=(",", ":")))
        for k, v in data.items()
        if k.startswith("oss-poll/")
    ]
    return max(sizes, default=0)


def metrics(daemon: DaemonProcess) -> dict[str, float]:
    found = {}
    for line in daemon.get("/metrics").body.decode().splitlines():
        wanted = line.startswith(("trigger_oss_poll_checkpoint", "trigger_state_errors_total"))
        if wanted and "_created{" not in line:
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def run(total: int) -> dict[str, Any]:
    oss, endpoint = start_oss()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            work = Path(scratch)
            (work / "rules").mkdir()
            (work / "rules" / "burst.yaml").write_text(rule(endpoint))
            daemon = DaemonProcess(work, work / "rules", env={"OSS_AK": AK, "OSS_SK": SK})
            daemon.start()
            try:
                return observe(daemon, endpoint, total, work / "state.json")
            finally:
                daemon.stop()
    finally:
        oss.kill()
        oss.wait()


def observe(daemon: DaemonProcess, endpoint: str, total: int, state: Path) -> dict[str, Any]:
    done: list[float] = []
    uploader = threading.Thread(target=lambda: done.append(upload(endpoint, total)))
    uploader.start()
    largest, unready, created, duplicates = 0, 0, 0, 0
    last_change, begin = time.monotonic(), time.monotonic()
    while True:
        largest = max(largest, checkpoint_bytes(state))
        unready += daemon.get("/readyz").status != 200
        rule = daemon.get("/status").json()["rules"]["burst"]
        if rule["created"] != created:
            created, last_change = rule["created"], time.monotonic()
        duplicates = rule["duplicates"]
        if done and (created >= total or time.monotonic() - last_change > STALL):
            break
        time.sleep(0.5)  # sampling interval
    uploader.join()
    return {
        "objects": total,
        "upload_seconds": round(done[0], 1),
        "uploads_per_second": round(total / done[0]),
        "created": created,
        "duplicates": duplicates,
        "never_fired": total - created,
        "seconds_to_last_workflow": round(last_change - begin, 1),
        "largest_checkpoint_bytes": largest,
        "readyz_not_200_samples": unready,
        "last_error": rule["last_error"],
        "metrics": metrics(daemon),
    }


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else OBJECTS
    result = run(total)
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "oss_poll.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
