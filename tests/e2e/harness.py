"""The end-to-end harness of the proof suites: every part a real process on loopback.

- `Broker`: tansu (`trigger.testing.kafka.KafkaBroker`), killed and restarted by PID (its
  memory store forgets every topic on a restart; `create_topics` again);
- `Emulator`: the Kubernetes API emulator, `python -m trigger.testing.kubeapi`, restarted
  on the same port (empty again); `storm()` steps its failure storm (SIGUSR1: 500, then
  429 with Retry-After, then answers lost after the object is stored, then calm);
- `OssServer`: `python -m trigger.testing.ossserver`, restarted on the same port;
- `Harness.daemon()`: `trigger run` (a `tests.daemon.DaemonProcess`) with the kubernetes
  sink into the emulator and, when a broker is given, the Kafka cluster `default` on it;
- `Producer`: confluent-kafka (librdkafka) — a producer that is not our code — which
  returns where each record landed, so a test knows the event ids to expect.

Workflows are counted over HTTP, as an operator would list them: `workflow_count()` asks
for one item and reads `remainingItemCount` (cheap enough to poll for progress), and
`workflows()` pages through all of them and groups them by (rule, event id), read from
the labels and annotations the daemon writes (`trigger.rules.render`).

`Harness` owns the parts a test starts and kills whatever is still running at its end;
`kill(part)` sends SIGKILL to the part's PID and `restart(part)` starts it again alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

from tests.daemon import DEADLINE, DaemonProcess, free_port
from trigger.rules.render import ANNOTATION_EVENT_ID, LABEL_RULE
from trigger.testing.kafka import KafkaBroker

WORKFLOWS = "/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflows"
TEMPLATES = "/apis/argoproj.io/v1alpha1/namespaces/{namespace}/workflowtemplates"
PAGE = 5000  # items per list request when reading every Workflow


class Part(Protocol):
    """A process of the harness: started, killed by PID, started again alike."""

    @property
    def pid(self) -> int | None: ...

    def start(self) -> Any: ...

    def stop(self) -> None: ...


P = TypeVar("P", bound=Part)


def _read_ready(process: subprocess.Popen[str], what: str) -> str:
    """The URL a test server prints as `READY URL` once it listens."""
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        process.wait(timeout=DEADLINE)
        raise RuntimeError(f"{what} did not start: {line!r}")
    return line.split()[1]


@dataclass
class _Server:
    """A `python -m MODULE` test server printing `READY URL`, on a port it keeps across
    restarts, its stderr appended to `log_path`."""

    module: str
    workdir: Path
    args: Sequence[str] = ()
    port: int = field(default_factory=free_port)
    url: str = ""
    process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.module.rsplit('.', 1)[-1]}.log"

    def start(self) -> _Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", self.module, "--port", str(self.port), *self.args]
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        self.url = _read_ready(self.process, self.module)
        return self

    def stop(self) -> None:
        """SIGKILL by PID and reap; idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=DEADLINE)
        if process.stdout is not None:
            process.stdout.close()


class Emulator(_Server):
    """The Kubernetes API emulator as a subprocess, and a small HTTP client for it."""

    def __init__(self, workdir: Path, namespaces: Sequence[str] = ("default",)) -> None:
        super().__init__("trigger.testing.kubeapi", workdir, ["--namespaces", ",".join(namespaces)])
        self.namespaces = tuple(namespaces)

    def start(self) -> Emulator:
        super().start()
        self.kubeconfig.write_text(yaml.safe_dump(self._kubeconfig(), sort_keys=False))
        return self

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def _kubeconfig(self) -> dict[str, Any]:
        context = {"cluster": "e", "user": "e", "namespace": self.namespaces[0]}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "e",
            "clusters": [{"name": "e", "cluster": {"server": self.url}}],
            "users": [{"name": "e", "user": {}}],
            "contexts": [{"name": "e", "context": context}],
        }

    def storm(self) -> None:
        """Step Workflow creates to the storm's next phase: calm → 500 → 429 → lost → calm."""
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API request; the decoded JSON answer (HTTPError on a failure status)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=DEADLINE) as response:
            return json.loads(response.read())

    def add_template(self, name: str, namespace: str = "default") -> None:
        """A WorkflowTemplate with one step and no required parameters."""
        template = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "WorkflowTemplate",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "entrypoint": "main",
                "templates": [{"name": "main", "container": {"image": "busybox"}}],
            },
        }
        self.call("POST", TEMPLATES.format(namespace=namespace), template)

    def workflow_count(self, namespace: str = "default") -> int:
        """How many Workflows exist, from a one-item list's `remainingItemCount`."""
        found = self.call("GET", WORKFLOWS.format(namespace=namespace) + "?limit=1")
        return len(found["items"]) + int(found["metadata"].get("remainingItemCount") or 0)

    def list_workflows(self, namespace: str = "default") -> Iterator[dict[str, Any]]:
        """Every Workflow in the namespace, page by page."""
        token = ""
        while True:
            query = {"limit": str(PAGE), **({"continue": token} if token else {})}
            path = WORKFLOWS.format(namespace=namespace) + "?" + urllib.parse.urlencode(query)
            found = self.call("GET", path)
            yield from found["items"]
            token = found["metadata"].get("continue") or ""
            if not token:
                return

    def workflows(self, namespace: str = "default") -> Counter[tuple[str, str]]:
        """How many Workflows each (rule, event id) has."""
        counts: Counter[tuple[str, str]] = Counter()
        for workflow in self.list_workflows(namespace):
            meta = workflow["metadata"]
            rule = (meta.get("labels") or {}).get(LABEL_RULE, "")
            counts[rule, (meta.get("annotations") or {}).get(ANNOTATION_EVENT_ID, "")] += 1
        return counts


class OssServer(_Server):
    """The OSS server as a subprocess (`--anonymous` unless credentials are given)."""

    def __init__(self, workdir: Path, buckets: Sequence[str], *args: str) -> None:
        flags = [a for b in buckets for a in ("--bucket", b)]
        super().__init__("trigger.testing.ossserver", workdir, [*flags, *(args or ["--anonymous"])])


class Broker:
    """tansu with memory storage; the same port across restarts (topics are lost)."""

    def __init__(self) -> None:
        self.kafka = KafkaBroker()

    @property
    def pid(self) -> int | None:
        return self.kafka.pid

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def start(self) -> Broker:
        asyncio.run(self.kafka.start())
        return self

    def create_topics(self, topics: Mapping[str, int]) -> None:
        asyncio.run(self.kafka.create_topics(dict(topics)))

    def stop(self) -> None:
        self.kafka.stop()


@dataclass(frozen=True)
class Delivered:
    """Where the broker stored one produced record."""

    topic: str
    partition: int
    offset: int

    @property
    def event_id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Producer:
    """confluent-kafka's producer (librdkafka): records out, their placement back."""

    def __init__(self, bootstrap: str, **config: Any) -> None:
        from confluent_kafka import Producer as KafkaProducer

        # tansu refuses the idempotent producer; librdkafka's default is off, say it anyway.
        settings = {"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": False}
        self._producer = KafkaProducer({**settings, **config})

    def produce(
        self, topic: str, records: Iterable[tuple[int, bytes | None, bytes | None]]
    ) -> list[Delivered]:
        """Send (partition, key, value) records and wait until each is acknowledged, in
        the order given; a record the broker did not take fails the call."""
        placed: dict[int, Delivered] = {}
        errors: list[str] = []

        def report(index: int) -> Any:
            def delivered(error: Any, message: Any) -> None:
                if error is not None:
                    errors.append(str(error))
                else:
                    placed[index] = Delivered(topic, message.partition(), message.offset())

            return delivered

        count = 0
        for count, (partition, key, value) in enumerate(records, 1):
            while True:
                try:
                    self._producer.produce(
                        topic, value, key, partition=partition, on_delivery=report(count - 1)
                    )
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self._producer.poll(0.1)
            self._producer.poll(0)
        left = self._producer.flush(DEADLINE)
        if errors or left:
            raise AssertionError(f"{left} record(s) unsent; errors: {errors[:5]}")
        return [placed[i] for i in range(count)]


def daemon_config(path: Path, bootstrap: str | None, **settings: Any) -> Path:
    """The daemon's config file: the Kafka cluster `default` on `bootstrap` (group `e2e`,
    from the earliest offset, a short session so a killed member is noticed soon), and
    `settings` merged on top."""
    config: dict[str, Any] = {"shutdown_deadline": "10s", "log": {"level": "info"}}
    if bootstrap is not None:
        cluster = {
            "bootstrap_servers": bootstrap,
            "group": "e2e",
            "auto_offset_reset": "earliest",
            "session_timeout": "2s",
            "heartbeat_interval": "300ms",
        }
        config["kafka"] = {"clusters": {"default": cluster}}
    for section, values in settings.items():
        config[section] = {**config.get(section, {}), **values}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Harness:
    """The parts one test runs; every one still running is killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.parts: list[Part] = []

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for part in reversed(self.parts):
            part.stop()

    def _own(self, part: P) -> P:
        self.parts.append(part)
        part.start()
        return part

    def broker(self, topics: Mapping[str, int] | None = None) -> Broker:
        broker = self._own(Broker())
        if topics:
            broker.create_topics(topics)
        return broker

    @staticmethod
    def producer(broker: Broker, **config: Any) -> Producer:
        """A confluent-kafka producer on the broker (librdkafka `config` on top)."""
        return Producer(broker.bootstrap, **config)

    def emulator(self, namespaces: Sequence[str] = ("default",)) -> Emulator:
        return self._own(Emulator(self.workdir / "kubeapi", namespaces))

    def oss(self, buckets: Sequence[str], *args: str) -> OssServer:
        return self._own(OssServer(self.workdir / "oss", buckets, *args))

    def daemon(
        self,
        name: str,
        rules: str,
        emulator: Emulator,
        broker: Broker | None = None,
        env: Mapping[str, str] | None = None,
        *,
        state: str | None = None,
        **settings: Any,
    ) -> DaemonProcess:
        """`trigger run` NAME with these rules (YAML text), the kubernetes sink into the
        emulator, and the broker's cluster as `default`; ready when it returns. `state` is
        the `--state` flag (default: a file in the daemon's directory; `kubernetes` shares
        ConfigMaps in the emulator between daemons)."""
        workdir = self.workdir / name
        (workdir / "rules").mkdir(parents=True, exist_ok=True)
        (workdir / "rules" / "rules.yaml").write_text(rules)
        config = daemon_config(
            workdir / "config.yaml", broker.bootstrap if broker else None, **settings
        )
        port = free_port()
        argv = [
            "--config", str(config),
            "--rules", str(workdir / "rules"),
            "--sink", "kubernetes",
            "--listen", f"127.0.0.1:{port}",
            "--state", state or f"file:{workdir / 'state.json'}",
            "--dead-letter", f"file:{workdir / 'dead-letters.jsonl'}",
        ]  # fmt: skip
        environment = {
            "TRIGGER_KUBERNETES__KUBECONFIG": str(emulator.kubeconfig),
            "HOSTNAME": name,
            **(env or {}),
        }
        daemon = DaemonProcess(workdir, workdir / "rules", port=port, env=environment, argv=argv)
        return self._own(daemon)

    @staticmethod
    def kill(part: Part) -> None:
        """SIGKILL the part by its PID and reap it (every part's `stop` does that)."""
        part.stop()

    @staticmethod
    def restart(part: Part) -> None:
        """Kill the part if it runs, then start it again alike (a daemon: until ready)."""
        part.stop()
        part.start()


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) the process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def life_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """The daemon's JSON log events since it last started."""
    events = daemon.log_events()
    starts = [i for i, e in enumerate(events) if e.get("event") == "trigger started"]
    return events[starts[-1] :] if starts else []


def kafka_partitions(daemon: DaemonProcess) -> set[str]:
    """The partitions the daemon holds now, from its log since it last started."""
    held: set[str] = set()
    for event in life_events(daemon):
        if event.get("event") == "kafka partitions assigned":
            held |= set(event["partitions"])
        elif event.get("event") == "kafka partitions given up":
            held -= set(event["partitions"])
    return held


def wait_for_workflows(
    emulator: Emulator, count: int, *, timeout: float = DEADLINE, stall: float = 60.0
) -> int:
    """Until at least `count` Workflows exist; how many there are then. Fails after
    `timeout` seconds, or once the count has not grown for `stall` seconds."""
    seen, grown = 0, time.monotonic()
    end = grown + timeout
    while (now := time.monotonic()) < end and now - grown < stall:
        try:
            latest = emulator.workflow_count()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            latest = seen
        if latest >= count:
            return latest
        if latest > seen:
            seen, grown = latest, now
        # Polling interval, not synchronization: a list costs the emulator a scan.
        time.sleep(0.1)
    raise AssertionError(f"{seen} of {count} Workflows; none more for {now - grown:.0f}s")
