"""The real parts of the push and leader-change suites, each a subprocess on loopback: the
Kubernetes API emulator and the OSS server, read over HTTP as any client would.

(The shared end-to-end harness lives in `tests/e2e/harness.py`; this module holds only
what these suites need from the two servers.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.daemon import DEADLINE

RULE_LABEL = "trigger.dev/rule"
EVENT_ID = "trigger.dev/event-id"


@contextmanager
def served(module: str, *args: str, log: Path) -> Iterator[str]:
    """Run `python -m MODULE ARGS` until the block ends (SIGKILL by PID); yield the URL of
    its `READY URL` line."""
    command = [sys.executable, "-m", module, *args]
    with log.open("ab") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    line: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(DEADLINE)
    try:
        found = re.match(r"READY (\S+)", line[0] if line else "")
        assert found, f"{module} did not start: {line} {log.read_text(errors='replace')}"
        yield found.group(1)
    finally:
        process.kill()
        process.wait(timeout=DEADLINE)


@dataclass(frozen=True)
class Kube:
    """The emulator's URL, and what it holds, read through its API."""

    url: str

    def kubeconfig(self, path: Path) -> Path:
        context = {"cluster": "emulator", "user": "emulator", "namespace": "default"}
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {}}],
            "contexts": [{"name": "emulator", "context": context}],
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def items(self, path: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + path, timeout=DEADLINE) as reply:
            found: list[dict[str, Any]] = json.loads(reply.read())["items"]
        return found

    def workflows(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.items(f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows")

    def workflows_per_event(self, namespace: str = "default") -> Counter[tuple[str, str]]:
        """How many Workflows each (rule, event id) has."""
        return Counter(
            (w["metadata"]["labels"][RULE_LABEL], w["metadata"]["annotations"][EVENT_ID])
            for w in self.workflows(namespace)
        )

    def lease_holder(self, namespace: str = "default") -> str | None:
        leases = self.items(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases")
        return leases[0]["spec"].get("holderIdentity") if leases else None


@contextmanager
def kube_process(log: Path, namespaces: Sequence[str] = ("default",)) -> Iterator[Kube]:
    """The Kubernetes API emulator as a subprocess."""
    with served("trigger.testing.kubeapi", "--namespaces", ",".join(namespaces), log=log) as url:
        yield Kube(url)


@contextmanager
def oss_process(log: Path, bucket: str, ak: str, sk: str) -> Iterator[str]:
    """The OSS server as a subprocess; yields its endpoint."""
    args = ("--port", "0", "--bucket", bucket, "--ak", ak, "--sk", sk)
    with served("trigger.testing.ossserver", *args, log=log) as endpoint:
        yield endpoint
