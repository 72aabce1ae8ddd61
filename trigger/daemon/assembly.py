"""`trigger run`: builds the parts from Settings, owns every task, stops gracefully.

Start: load rules (a bad rule set at start is exit 1), open the sink and the dead-letter
sink, serve HTTP, start the rule watcher and the sources the rules use. Stop (SIGTERM or
SIGINT): stop intake (the HTTP listener closes; in-flight deliveries finish), drain
in-flight submissions within `shutdown_deadline`, close everything, exit 0. A second
signal, or the deadline passing, forces exit 1.
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
from trigger.core.lograte import LogRate
from trigger.core.metrics import Metrics
from trigger.core.pipeline import MetricsHooks, Pipeline
from trigger.core.storagewatch import StorageWatch
from trigger.daemon.connections import Connections, Limits, ServerLog, Site
from trigger.daemon.http import Health, HttpContext, build_app, metrics_app
from trigger.daemon.leader import Leadership
from trigger.daemon.memory import settle_heap
from trigger.daemon.sources import SourceManager
from trigger.daemon.supervisor import Supervisor
from trigger.errors import ConfigError, RuleError
from trigger.rules.loader import load_rules, rule_files
from trigger.rules.router import RuleSet
from trigger.settings import Settings
from trigger.sources.base import SourceContext
from trigger.sources.kafka import config as kafka_config
from trigger.sources.oss.push import OssPush
from trigger.sources.webhook import resolve_auth
from trigger.submit.base import Sink
from trigger.submit.checked import CheckedSink
from trigger.submit.deadletter import DeadLetterSink, FileDeadLetterSink, OnceDeadLetters
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
            "qps": k.qps,
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
        }
    return {}


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


@dataclass
class Daemon:
    settings: Settings
    clock: Clock
    metrics: Metrics
    embedded: bool = False
    sources: SourceManager | None = None
    loaded: tuple[tuple[str, int, int], ...] = ()  # fingerprint of the loaded rule files
    _rules: RuleSet | None = None
    storage_watch: StorageWatch | None = None  # counts and logs writes the disk refused

    @classmethod
    def create(cls, settings: Settings, *, embedded: bool = False) -> Daemon:
        return cls(settings, SystemClock(), Metrics(), embedded)

    async def run(self) -> int:
        self.loaded = await asyncio.to_thread(fingerprint, self.settings.rules)
        try:
            rules = await asyncio.to_thread(load_rules, self.settings.rules)
            self._check_kafka(rules)
        except RuleError as exc:
            for problem in exc.problems:
                log.error("invalid rule", problem=str(problem))
            return EXIT_RULES
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
            return await self._serve(rules, sink, dead_letters)
        finally:
            await sink.close()
            await dead_letters.close()

    async def _serve(self, rules: RuleSet, sink: Sink, dead_letters: DeadLetterSink) -> int:
        s = self.settings
        self._rules = rules
        catalog = self._catalog(sink)
        submit_sink: Sink = sink
        if catalog is not None:
            submit_sink = CheckedSink(sink, catalog, self.clock, s.submit.template_grace)
        submitter = Submitter(
            submit_sink,
            dead_letters,
            self.clock,
            max_in_flight=s.submit.max_in_flight,
            hooks=MetricsHooks(self.metrics, self.clock),
            size_limit=SizeLimit(s.submit.max_workflow_bytes),
        )
        pipeline = Pipeline(rules, submitter, dead_letters, self.metrics, self.clock)
        pipeline.swap(rules)
        health = Health(rules_loaded=True, sink_check=sink.check, leader=False)
        ctx = HttpContext(
            pipeline,
            self.metrics,
            push_deadline=s.submit.push_deadline,
            request_timeout=s.http.request_timeout,
            health=health,
            webhook_auth=resolve_auth(rules),
        )
        self._report_auth(ctx)
        # OSS push receivers (EventBridge, MNS): always mounted at oss.push.*_path.
        oss_push = OssPush.create(ctx, s.oss.push, os.environ, listen=s.listen)
        ctx.extra_routes.extend(oss_push.routes())
        oss_push.report()
        runners = await self._listen(ctx)
        supervisor = Supervisor(self.clock, self.metrics)
        state = await open_state(s.state, sink, self.metrics, self.storage_watch)
        sources = SourceManager(
            SourceContext(pipeline, self.metrics, self.clock, sink, state, s, dict(os.environ)),
            supervisor,
            leader=False,
        )
        self.sources = sources
        health.source_problems = sources.problems
        leadership = leadership_for(s, sink, self.clock)
        supervisor.start("leader-election", leadership.run, "core")
        supervisor.start("leadership", lambda: self._follow(leadership, sources, health), "core")
        health.sources = sources.health()
        await sources.sync(rules, s.shutdown_deadline)
        if catalog is not None:
            supervisor.start("template-catalog", catalog.run, "source")
            supervisor.start("template-checks", lambda: self._check_templates(ctx, catalog), "core")
        stopping = asyncio.Event()
        reload_now = asyncio.Event()
        self._signals(stopping, reload_now)
        supervisor.start("rules-reloader", lambda: self._reloader(ctx, reload_now), "core")
        self._announce(rules)
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
        return EXIT_CONFIG if failed else code

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
        if not drained:
            log.error(
                "shutdown deadline passed with submissions in flight", in_flight=submitter.in_flight
            )
            return EXIT_FORCED
        log.info("stopped cleanly", seconds=round(elapsed, 3))
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

    def _catalog(self, sink: Sink) -> TemplateCatalog | None:
        api_client = getattr(sink, "api_client", None)
        if api_client is None or not self.settings.submit.check_templates:
            return None
        # Watch only what the rules use (least privilege): their namespaces, unless set, and
        # ClusterWorkflowTemplates only when a rule refers to one. CheckedSink skips checks
        # for templates outside what is watched (a reload may add a namespace).
        rules = self._rules.rules if self._rules else ()
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
        self.loaded = await asyncio.to_thread(fingerprint, self.settings.rules)
        try:
            rules = await asyncio.to_thread(load_rules, self.settings.rules)
            self._check_kafka(rules)
        except RuleError as exc:
            return self._reload_failed(ctx, [str(p) for p in exc.problems])
        previous = ctx.pipeline.rules
        ctx.pipeline.swap(rules)
        if self.sources is not None:
            try:
                await self.sources.sync(rules, self.settings.shutdown_deadline)
            except ConfigError as exc:  # a source cannot serve these rules (e.g. its sink)
                ctx.pipeline.swap(previous)
                await self.sources.sync(previous, self.settings.shutdown_deadline)
                return self._reload_failed(ctx, [str(exc)])
            ctx.health.sources = self.sources.health()
        ctx.webhook_auth = resolve_auth(rules)
        ctx.pipeline.submitter.rate_limiters.retain({rule.name for rule in rules.rules})
        ctx.health.reload_error = []
        self.metrics.reloads.labels("ok").inc()
        log.info("rules reloaded", why=why, rules=len(rules), files=len(rules.files))
        self._report_auth(ctx)
        return True

    def _check_kafka(self, rules: RuleSet) -> None:
        """A Kafka rule must name a configured cluster (RuleError) — except on the embedded
        default, where the example Kafka rule stays loaded but inactive until a cluster is
        configured with --kafka-bootstrap."""
        if not self.embedded:
            kafka_config.check_rules(rules, self.settings)
            return
        for problem in kafka_config.unknown_cluster_problems(rules, self.settings):
            log.warning("Kafka rule inactive on the embedded default", problem=str(problem))

    def _reload_failed(self, ctx: HttpContext, problems: list[str]) -> bool:
        ctx.health.reload_error = problems
        self.metrics.reloads.labels("error").inc()
        for problem in problems:
            log.error("reload failed; previous rules stay active", problem=problem)
        return False

    def _report_auth(self, ctx: HttpContext) -> None:
        for path, auth in ctx.webhook_auth.items():
            if auth.auth is not None and auth.secret is None:
                log.error("webhook path refuses every delivery", path=path, reason=auth.problem)

    def _announce(self, rules: RuleSet) -> None:
        s = self.settings
        host, _, port = s.listen.rpartition(":")
        base = f"http://{host}:{port}"
        log.info(
            "trigger started",
            version=__version__,
            rules=len(rules),
            files=len(rules.files),
            sink=s.sink,
            listen=base,
            kinds=sorted(rules.kinds()),
        )
        if self.embedded:
            log.info(
                "running on the embedded default: example rules, Workflows written as YAML "
                "under ./workflows/, state under ./state/, dead letters in ./dead-letters.jsonl",
                rules=list(s.rules),
            )
        for path in sorted(rules.webhook_paths()):
            log.info("webhook endpoint", url=f"{base}{path}")
        log.info(
            "health and metrics",
            healthz=f"{base}/healthz",
            readyz=f"{base}/readyz",
            status=f"{base}/status",
            metrics=f"{base}/metrics",
        )
