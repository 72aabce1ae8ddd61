"""`trigger run`: builds the parts from Settings, owns every task, stops gracefully.

Start: load and judge the rules (trigger.daemon.verdicts: invalid rules, or idle ones in
strict mode, are exit 1), open the sink and the dead-letter sink, serve HTTP, start the
rule watcher and the sources the active rules use; the start log says where the rules
came from, which are idle and why, and every URL senders can post to. Stop (SIGTERM or
SIGINT): stop intake (the HTTP listener closes; in-flight deliveries finish), drain
in-flight submissions within `shutdown_deadline`, close everything, exit 0 with a
one-line summary of the run. A second signal, or the deadline passing, forces exit 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from trigger import __version__
from trigger.clock import Clock, SystemClock
from trigger.core.decisions import Decisions
from trigger.core.flowwatch import FlowWatch
from trigger.core.gatekeeper import GateKeeper
from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.core.queues import SemaphoreConfigMaps
from trigger.core.storagewatch import StorageWatch
from trigger.daemon.connections import Connections, Limits, ServerLog, Site
from trigger.daemon.console import Console
from trigger.daemon.http import Health, HttpContext, build_app, metrics_app
from trigger.daemon.leader import Leadership
from trigger.daemon.memory import settle_heap
from trigger.daemon.queues import QueueKeeper, QueueStatus
from trigger.daemon.sources import SourceManager
from trigger.daemon.supervisor import Supervisor
from trigger.daemon.verdicts import (
    StrictRefusal,
    Verdicts,
    endpoints,
    judge,
    read_push_auth,
)
from trigger.errors import ConfigError, RuleError
from trigger.rules.loader import rule_files
from trigger.rules.router import RuleSet
from trigger.settings import Settings
from trigger.sources.base import SourceContext
from trigger.sources.kafka import config as kafka_config
from trigger.sources.oss.push import OssPush, PushAuth
from trigger.submit.base import Sink
from trigger.submit.checked import CheckedSink
from trigger.submit.deadletter import DeadLetterSink, FileDeadLetterSink, OnceDeadLetters
from trigger.submit.flow import FlowController
from trigger.submit.flow import FlowSettings as FlowKnobs
from trigger.submit.sinks import open_sink
from trigger.submit.size import SizeLimit
from trigger.submit.storage import StorageObserver
from trigger.submit.submitter import Submitter
from trigger.submit.templates import TemplateCatalog, check_rules, locate

log = structlog.get_logger("trigger.daemon")
EXIT_OK, EXIT_RULES, EXIT_CONFIG, EXIT_FORCED = 0, 1, 2, 1
SIGNAL_ECHO = 0.5  # seconds: a repeat this soon is one request delivered twice, not a second


def sink_options(
    settings: Settings, environ: Mapping[str, str], observer: StorageObserver | None = None
) -> dict[str, Any]:
    """The sink's options from settings; secrets are read here, from env or files."""
    kind = settings.sink.split(":", 1)[0]
    if kind == "local":
        return {"observer": observer}
    if kind == "kubernetes":
        k = settings.kubernetes
        return {
            "kubeconfig": k.kubeconfig,
            "context": k.context,
            "in_cluster": k.in_cluster,
            "server": k.server,
            "token": environ.get(k.token_env) if k.token_env else None,
            "token_file": k.token_file,
            "ca_file": k.ca_file,
            "insecure_skip_tls_verify": k.insecure_skip_tls_verify,
            "qps": k.qps or 0,
            "trust_env": k.trust_env,
            "burst": k.burst,
            "timeout": k.timeout,
        }
    if kind == "argo-server":
        a = settings.argo_server
        token = environ.get(a.token_env) if a.token_env else None
        if not token and not a.token_file:
            raise ConfigError(
                f"sink argo-server needs a token: set {a.token_env or 'argo_server.token_env'} "
                "or argo_server.token_file"
            )
        return {
            "token": token,
            "token_file": a.token_file,
            "ca_file": a.ca_file,
            "insecure_skip_tls_verify": a.insecure_skip_tls_verify,
            "timeout": a.timeout,
            "qps": a.qps or 0,
            "burst": a.burst,
        }
    return {}


def flow_for(
    settings: Settings, sink: Sink, metrics: Metrics, clock: Clock
) -> FlowController | None:
    """The flow controller toward a remote backend (kubernetes, argo-server): adaptive,
    under the user's qps as a hard ceiling. None for local sinks, or when switched off."""
    ceilings = {"kubernetes": settings.kubernetes.qps, "argo-server": settings.argo_server.qps}
    if sink.kind not in ceilings or not settings.flow.enabled:
        return None
    f, ceiling = settings.flow, ceilings[sink.kind]
    floor = f.min_rate if ceiling is None else min(f.min_rate, ceiling)
    knobs = FlowKnobs(
        initial_rate=max(f.initial_rate, floor),
        min_rate=floor,
        max_rate=ceiling,
        probe_max=f.probe_max,
        probe_timeout=f.probe_timeout,
    )
    return FlowController(sink.kind, clock, knobs, observer=FlowWatch(metrics, clock))


def leadership_for(settings: Settings, sink: Sink, clock: Clock) -> Leadership:
    """A Lease election with the kubernetes sink's connection, else the lone local leader."""
    from trigger.daemon import leader

    enabled = settings.leader.enabled
    api_client = getattr(sink, "api_client", None)
    if enabled is None:
        enabled = api_client is not None
    if not enabled:
        return leader.LocalLeader()
    if api_client is None:
        raise ConfigError(
            "leader election uses the kubernetes sink's connection: --sink kubernetes"
        )
    options = settings.leader
    return leader.LeaderElector(
        api_client,
        leader.LeaderSettings(
            lease_name=options.lease_name,
            namespace=options.namespace or pod_namespace(),
            lease_duration=options.lease_duration,
            renew_deadline=options.renew_deadline,
            retry_period=options.retry_period,
        ),
        clock=clock,
    )


def pod_namespace() -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or "default"
    except OSError:
        return "default"


def fingerprint(paths: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """(file, mtime, size) of every rule file: what a reload would read."""
    result = []
    for file in rule_files(paths):
        try:
            stat = file.stat()
        except OSError:
            continue
        result.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(result)


async def open_state(
    spec: str, sink: Sink, metrics: Metrics, observer: StorageObserver | None = None
) -> Any:
    """The state store; `kubernetes` shares the kubernetes sink's connection."""
    from trigger.core.state import open_state_store

    api_client = getattr(sink, "api_client", None)
    return await open_state_store(spec, api_client, metrics=metrics, observer=observer)


def dead_letter_sink(spec: str, observer: StorageObserver | None = None) -> FileDeadLetterSink:
    kind, _, path = spec.partition(":")
    if kind != "file" or not path:
        raise ConfigError(f"dead_letter {spec!r}: use file:PATH")
    return FileDeadLetterSink(path, observer=observer)


def run_summary(metrics: Metrics, uptime: float) -> dict[str, Any]:
    """What the run did, from its counters: the last log line of a stop."""
    totals = {"events": 0.0, "created": 0.0, "duplicates": 0.0, "dead_letters": 0.0}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "trigger_events_received_total":
                totals["events"] += sample.value
            elif sample.name == "trigger_dead_letters_total":
                totals["dead_letters"] += sample.value
            elif sample.name == "trigger_workflows_total":
                outcome = sample.labels.get("outcome")
                if outcome == "created":
                    totals["created"] += sample.value
                elif outcome == "duplicate":
                    totals["duplicates"] += sample.value
    return {**{k: int(v) for k, v in totals.items()}, "uptime": round(uptime, 3)}


@dataclass
class Daemon:
    settings: Settings
    clock: Clock
    metrics: Metrics
    rules_origin: str = "default"  # where `settings.rules` came from (a flag, a variable, …)
    sources: SourceManager | None = None
    loaded: tuple[tuple[str, int, int], ...] = ()  # fingerprint of the loaded rule files
    _verdicts: Verdicts | None = None
    storage_watch: StorageWatch | None = None  # counts and logs writes the disk refused
    queue_keeper: QueueKeeper | None = None  # keeps the queues' semaphores (leader only)
    _push: PushAuth | None = None  # the OSS receivers' authentication, read at start
    _started: float = 0.0  # monotonic

    @classmethod
    def create(cls, settings: Settings, *, rules_origin: str = "default") -> Daemon:
        return cls(settings, SystemClock(), Metrics(), rules_origin)

    async def run(self) -> int:
        self._started = self.clock.monotonic()
        s = self.settings
        self.loaded = await asyncio.to_thread(fingerprint, s.rules)
        push = self._push = await asyncio.to_thread(read_push_auth, s, os.environ)
        try:
            verdicts = await asyncio.to_thread(judge, s.rules, s, os.environ, push)
        except StrictRefusal as exc:
            self._report_rules(exc.verdicts, refused=True)
            return EXIT_RULES
        except RuleError as exc:
            for problem in exc.problems:
                log.error("invalid rule", problem=str(problem))
            return EXIT_RULES
        self._report_rules(verdicts)
        watch = self.storage_watch = StorageWatch(self.metrics, self.clock)
        options = sink_options(self.settings, os.environ, watch)
        sink: Sink = await open_sink(self.settings.sink, **options)
        # Kafka events' dead letters go to their cluster's dead-letter topic when it has one;
        # each (event, rule, reason) is written once, also across restarts (the file says).
        dead_letter_file = dead_letter_sink(self.settings.dead_letter, watch)
        dead_letters = OnceDeadLetters(
            kafka_config.dead_letter_sink(self.settings, dead_letter_file, os.environ),
            primer=dead_letter_file,
        )
        try:
            return await self._serve(verdicts, sink, dead_letters)
        finally:
            await sink.close()
            await dead_letters.close()

    def _pipeline(
        self,
        rules: RuleSet,
        sink: Sink,
        catalog: TemplateCatalog | None,
        dead_letters: DeadLetterSink,
    ) -> tuple[Submitter, Pipeline]:
        """The submitter (template checks, flow control, size limit, hooks) and the pipeline
        that feeds it, with the rules in place."""
        s = self.settings
        submit_sink: Sink = sink
        if catalog is not None:
            submit_sink = CheckedSink(sink, catalog, self.clock, s.submit.template_grace)
        decisions = self._decisions()
        submitter = Submitter(
            submit_sink,
            dead_letters,
            self.clock,
            max_in_flight=s.submit.max_in_flight,
            hooks=MetricsHooks(self.metrics, self.clock, decisions),
            size_limit=SizeLimit(s.submit.max_workflow_bytes),
            flow=flow_for(s, sink, self.metrics, self.clock),
        )
        pipeline = Pipeline(
            rules, submitter, dead_letters, self.metrics, self.clock, decisions=decisions
        )
        pipeline.swap(rules)
        return submitter, pipeline

    async def _serve(self, verdicts: Verdicts, sink: Sink, dead_letters: DeadLetterSink) -> int:
        s = self.settings
        rules = verdicts.rules
        self._verdicts = verdicts
        catalog = self._catalog(sink)
        submitter, pipeline = self._pipeline(rules, sink, catalog, dead_letters)
        # Not ready (rules_loaded) until start-up is done and announced.
        health = Health(
            sink_check=sink.check, leader=False, verdicts=verdicts, loaded_at=self.clock.now()
        )
        ctx = HttpContext(
            pipeline,
            self.metrics,
            push_deadline=s.submit.push_deadline,
            request_timeout=s.http.request_timeout,
            health=health,
            webhook_auth=dict(verdicts.webhooks),
        )
        # OSS push receivers (EventBridge, MNS): always mounted at oss.push.*_path.
        assert self._push is not None
        oss_push = OssPush.create(ctx, s.oss.push, self._push)
        # The OSS push receivers, the status page and /api/*.
        ctx.extra_routes.extend(
            [*oss_push.routes(), *Console(pipeline, s, self.clock, health).routes()]
        )
        runners = await self._listen(ctx)
        supervisor = Supervisor(self.clock, self.metrics)
        state = await open_state(s.state, sink, self.metrics, self.storage_watch)
        pipeline.gates = GateKeeper(
            state, submitter, dead_letters, self.clock, self.metrics, pipeline.record_outcome
        )
        sources = SourceManager(
            SourceContext(pipeline, self.metrics, self.clock, sink, state, s, dict(os.environ)),
            supervisor,
            leader=False,
        )
        self.sources = sources
        health.source_problems = sources.problems
        leadership = leadership_for(s, sink, self.clock)
        supervisor.start("leader-election", leadership.run, "core")
        self._keep_queues(supervisor, sink, leadership, ctx)
        supervisor.start("leadership", lambda: self._follow(leadership, sources, health), "core")
        health.sources = sources.health()
        await sources.sync(verdicts.active, s.shutdown_deadline)
        if catalog is not None:
            supervisor.start("template-catalog", catalog.run, "source")
            supervisor.start("template-checks", lambda: self._check_templates(ctx, catalog), "core")
        stopping = asyncio.Event()
        reload_now = asyncio.Event()
        self._signals(stopping, reload_now)
        supervisor.start("rules-reloader", lambda: self._reloader(ctx, reload_now), "core")
        self._announce(verdicts)
        health.rules_loaded = True
        settle_heap()  # start-up is done: see trigger.daemon.memory
        stopper: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        waits: set[asyncio.Future[Any]] = {stopper, supervisor.failed}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        failed = supervisor.failed.done()
        stopper.cancel()
        log.info(
            "stopping: intake closed, draining in-flight submissions",
            in_flight=submitter.in_flight,
            deadline=s.shutdown_deadline,
        )
        await sources.stop_all(s.shutdown_deadline)
        code = await self._drain(runners, submitter, supervisor)
        await oss_push.close()
        await state.close()
        if submitter.flow is not None:
            await submitter.flow.close()
        return EXIT_CONFIG if failed else code

    def _decisions(self) -> Decisions:
        """The ring of decision records, its size and drops served as metrics."""
        options = self.settings.decisions
        decisions = Decisions(options.size, max_event_bytes=options.max_event_bytes)
        self.metrics.watch_decisions(lambda: len(decisions), lambda: decisions.dropped)
        return decisions

    async def _drain(
        self, runners: list[web.AppRunner], submitter: Submitter, supervisor: Supervisor
    ) -> int:
        deadline = self.settings.shutdown_deadline
        start = self.clock.monotonic()
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()  # no new connections; in-flight requests go on
        for runner in runners:
            await runner.shutdown()  # waits for in-flight requests (shutdown_timeout)
        remaining = max(deadline - (self.clock.monotonic() - start), 0.0)
        drained = await submitter.drain(remaining)
        for runner in runners:
            await runner.cleanup()
        await supervisor.stop()
        elapsed = self.clock.monotonic() - start
        summary = run_summary(self.metrics, self.clock.monotonic() - self._started)
        if not drained:
            log.error(
                "shutdown deadline passed with submissions in flight",
                in_flight=submitter.in_flight,
                **summary,
            )
            return EXIT_FORCED
        log.info("stopped cleanly", seconds=round(elapsed, 3), **summary)
        return EXIT_OK

    async def _listen(self, ctx: HttpContext) -> list[web.AppRunner]:
        s = self.settings
        separate = s.metrics_listen is not None
        apps = [
            (build_app(ctx, max_body=s.http.max_body_bytes, with_metrics=not separate), s.listen)
        ]
        if separate:
            assert s.metrics_listen is not None
            apps.append((metrics_app(self.metrics), s.metrics_listen))
        limits = Limits(s.http.header_timeout, s.http.keepalive_timeout, s.http.max_connections)
        connections = Connections(limits, self.metrics)  # one table: the limit is for all
        server_log = ServerLog(LogRate(self.clock))  # clients' errors: one line, no traceback
        runners = []
        for app, address in apps:
            host, _, port = address.rpartition(":")
            app.middlewares.append(connections.middleware)
            runner = web.AppRunner(
                app, access_log=None, shutdown_timeout=s.shutdown_deadline, logger=server_log
            )
            await runner.setup()
            try:
                await Site(runner, host.strip("[]"), int(port), connections).start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from exc
            runners.append(runner)
        return runners

    def _signals(self, stopping: asyncio.Event, reload_now: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()

        first: list[float] = []

        def stop() -> None:
            now = self.clock.monotonic()
            if not first:
                first.append(now)
                stopping.set()
            elif now - first[0] > SIGNAL_ECHO:
                log.error("second signal: exiting now")
                os._exit(EXIT_FORCED)
            # else: the same request delivered twice (a signal sent to the process group
            # as well as to the process, as `timeout` and some supervisors do)

        loop.add_signal_handler(signal.SIGTERM, stop)
        loop.add_signal_handler(signal.SIGINT, stop)
        loop.add_signal_handler(signal.SIGHUP, reload_now.set)

    def _keep_queues(
        self, supervisor: Supervisor, sink: Sink, leadership: Leadership, ctx: HttpContext
    ) -> None:
        """Start the keeper of the queues' semaphore ConfigMaps (over the sink's
        connection) and show the queues in /status."""
        api_client = getattr(sink, "api_client", None)
        configmaps = None
        if api_client is not None:
            timeout = self.settings.kubernetes.timeout
            configmaps = SemaphoreConfigMaps(api_client, clock=self.clock, timeout=timeout)
        rules = ctx.pipeline.rules
        keeper = QueueKeeper(
            configmaps, leadership, self.clock, rules, sink_kind=sink.kind, metrics=self.metrics
        )
        self.queue_keeper = keeper
        supervisor.start("queue-keeper", keeper.run, "core")
        ctx.health.queues = QueueStatus(sink, lambda: ctx.pipeline.rules, keeper).describe

    def _catalog(self, sink: Sink) -> TemplateCatalog | None:
        api_client = getattr(sink, "api_client", None)
        if api_client is None or not self.settings.submit.check_templates:
            return None
        # Watch only what the rules use (least privilege): their namespaces, unless set, and
        # ClusterWorkflowTemplates only when a rule refers to one. CheckedSink skips checks
        # for templates outside what is watched (a reload may add a namespace).
        rules = self._verdicts.rules.rules if self._verdicts else ()
        namespaces = self.settings.submit.template_namespaces or sorted(
            {r.workflow.namespace for r in rules if not r.workflow.clusterScope}
        )
        return TemplateCatalog(
            api_client,
            namespaces=list(namespaces),
            cluster_templates=any(r.workflow.clusterScope for r in rules),
        )

    async def _check_templates(self, ctx: HttpContext, catalog: TemplateCatalog) -> None:
        """Check the rules against the templates once synced, and whenever either changes."""
        changed = asyncio.Event()
        catalog.subscribe(lambda _key: changed.set())
        await catalog.wait_synced()
        while True:
            changed.clear()
            problems = [
                locate(p, ctx.pipeline.rules) for p in check_rules(ctx.pipeline.rules, catalog)
            ]
            ctx.health.template_problems = [str(p) for p in problems]
            for problem in problems:
                log.warning("rule does not fit its WorkflowTemplate", problem=str(problem))
            await changed.wait()
            await self.clock.sleep(self.settings.reload_debounce)  # let a burst settle

    async def _follow(self, leadership: Leadership, sources: SourceManager, health: Health) -> None:
        """Run the singleton sources while leading (see SourceManager.follow); report it."""

        def synced() -> None:
            health.leader = sources.leader
            health.sources = sources.health()
            self.metrics.leader.set(1 if sources.leader else 0)

        await sources.follow(leadership, self.settings.shutdown_deadline, synced)

    async def _reloader(self, ctx: HttpContext, reload_now: asyncio.Event) -> None:
        """Reload on SIGHUP, and on file changes when `reload` is on."""
        tasks = [asyncio.ensure_future(self._on_signal(ctx, reload_now))]
        if self.settings.reload:
            tasks.append(asyncio.ensure_future(self._on_change(ctx)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _on_signal(self, ctx: HttpContext, reload_now: asyncio.Event) -> None:
        while True:
            await reload_now.wait()
            reload_now.clear()
            await self.reload(ctx, "SIGHUP")

    async def _on_change(self, ctx: HttpContext) -> None:
        """Reload when rule files change.

        The watcher yields every second even without events; each time, the rule files'
        fingerprint is compared with the loaded one. That closes the gap between the first
        load and the watcher starting, and covers file systems where events are lost.
        """
        from watchfiles import awatch

        paths = await asyncio.to_thread(
            lambda: [p for p in self.settings.rules if Path(p).exists()]
        )
        debounce = int(self.settings.reload_debounce * 1000)
        async for changes in awatch(
            *paths, debounce=debounce, recursive=True, rust_timeout=1000, yield_on_timeout=True
        ):
            current = await asyncio.to_thread(fingerprint, self.settings.rules)
            if current == self.loaded:
                continue
            files = sorted({Path(p).name for _, p in changes}) or ["(missed event)"]
            await self.reload(ctx, f"changed: {', '.join(files)}")

    async def reload(self, ctx: HttpContext, why: str) -> bool:
        s = self.settings
        self.loaded = await asyncio.to_thread(fingerprint, s.rules)
        try:
            verdicts = await asyncio.to_thread(judge, s.rules, s, os.environ, self._push)
        except RuleError as exc:  # invalid, or idle in strict mode
            return self._reload_failed(ctx, [str(p) for p in exc.problems])
        previous = ctx.health.verdicts
        assert previous is not None
        ctx.pipeline.swap(verdicts.rules)
        if self.sources is not None:
            try:
                await self.sources.sync(verdicts.active, s.shutdown_deadline)
            except ConfigError as exc:  # a source cannot serve these rules (e.g. its sink)
                ctx.pipeline.swap(previous.rules)
                await self.sources.sync(previous.active, s.shutdown_deadline)
                return self._reload_failed(ctx, [str(exc)])
            ctx.health.sources = self.sources.health()
        ctx.webhook_auth = dict(verdicts.webhooks)
        ctx.health.verdicts = self._verdicts = verdicts
        if self.queue_keeper is not None:
            self.queue_keeper.rules_changed(verdicts.rules)
        ctx.health.loaded_at = self.clock.now()
        ctx.pipeline.submitter.rate_limiters.retain({r.name for r in verdicts.rules.rules})
        ctx.health.reload_error = []
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "rules reloaded",
            why=why,
            rules=len(verdicts.rules.written),
            files=len(verdicts.rules.files),
            active=verdicts.active_count,
            idle=len(verdicts.idle),
        )
        self._report_idle(verdicts)
        return True

    def _reload_failed(self, ctx: HttpContext, problems: list[str]) -> bool:
        ctx.health.reload_error = problems
        self.metrics.reloads.labels("error").inc()
        for problem in problems:
            log.error("reload failed; previous rules stay active", problem=problem)
        return False

    def _report_rules(self, verdicts: Verdicts, *, refused: bool = False) -> None:
        """Where the rules came from, and each idle rule: a warning, or an error when
        strict mode refuses to start with it."""
        rules = verdicts.rules
        log.info(
            "rules loaded",
            origin=self.rules_origin,
            paths=list(self.settings.rules),
            rules=len(rules.written),
            files=len(rules.files),
        )
        self._report_idle(verdicts, refused=refused)
        if refused:
            log.error("strict mode: idle rules are errors; not starting", idle=len(verdicts.idle))

    def _report_idle(self, verdicts: Verdicts, *, refused: bool = False) -> None:
        for warning in verdicts.rules.warnings:  # e.g. a rule file with no rules in it
            log.warning("rule file warning", problem=str(warning))
        report = log.error if refused else log.warning
        for name, verdict in verdicts.shown.items():
            if verdict.state == "idle":
                report("rule idle", rule=name, reason=verdict.reason, where=verdict.where)

    def _announce(self, verdicts: Verdicts) -> None:
        s = self.settings
        assert self._push is not None
        for endpoint in endpoints(s, self._push, verdicts):
            where = {"url": endpoint.url, "receiver": endpoint.receiver}
            if endpoint.refused:
                log.error("endpoint refuses every delivery", **where, reason=endpoint.refused)
            elif endpoint.checks == "nothing":
                log.warning(
                    "endpoint accepts unauthenticated deliveries",
                    **where,
                    reason="no authentication is configured; the daemon listens on loopback only",
                )
            else:
                log.info("endpoint", **where, checks=endpoint.checks)
        host, _, port = s.listen.rpartition(":")
        base = f"http://{host}:{port}"
        rules = verdicts.rules
        log.info(
            "trigger started",
            version=__version__,
            rules=len(rules.written),
            active=verdicts.active_count,
            idle=len(verdicts.idle),
            files=len(rules.files),
            sink=s.sink,
            listen=base,
            kinds=sorted(rules.kinds()),
        )
        log.info(
            "health and metrics",
            healthz=f"{base}/healthz",
            readyz=f"{base}/readyz",
            status=f"{base}/status",
            metrics=f"{base}/metrics",
        )
