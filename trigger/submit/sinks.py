"""The sink registry: the CLI's `--sink` forms, each parsed by one entry of one table.

`local:DIR`, `stdout[:yaml|json]`, `kubernetes`, `argo-server:URL`. Keyword options are
the fields of the sink's options (e.g. `qps=20` for kubernetes, `token_file=…` for
argo-server). Adding a kind of sink means adding a module and one line to `SINKS` (how to
open it) and to `TYPES` (its class, for what it can do before one is opened).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from trigger.errors import ConfigError
from trigger.submit.base import Sink

SinkFactory = Callable[[str, dict[str, Any]], Awaitable[Sink]]


def _no_argument(kind: str, argument: str) -> None:
    if argument:
        raise ConfigError(f"sink {kind!r} takes no argument, got {argument!r}")


async def _local(argument: str, options: dict[str, Any]) -> Sink:
    from trigger.submit.local import LocalSink

    if not argument:
        raise ConfigError("sink local needs a directory: local:DIR")
    return LocalSink(argument, **options)


async def _stdout(argument: str, options: dict[str, Any]) -> Sink:
    from trigger.submit.stdout import StdoutSink

    chosen = argument or options.pop("format", "yaml")
    if chosen not in ("yaml", "json"):
        raise ConfigError(f"sink stdout: unknown format {chosen!r} (yaml or json)")
    return StdoutSink(format="json" if chosen == "json" else "yaml", **options)


async def _kubernetes(argument: str, options: dict[str, Any]) -> Sink:
    from trigger.submit.kubernetes import KubernetesOptions, KubernetesSink

    _no_argument("kubernetes", argument)
    clock = options.pop("clock", None)
    return await KubernetesSink.connect(KubernetesOptions(**options), clock=clock)


async def _argo_server(argument: str, options: dict[str, Any]) -> Sink:
    from trigger.submit.argo_server import ArgoServerOptions, ArgoServerSink

    if not argument.startswith(("http://", "https://")):
        raise ConfigError(f"sink argo-server needs a URL: argo-server:https://…, got {argument!r}")
    clock = options.pop("clock", None)
    return await ArgoServerSink.connect(ArgoServerOptions(url=argument, **options), clock=clock)


SINKS: Final[Mapping[str, SinkFactory]] = MappingProxyType(
    {
        "local": _local,
        "stdout": _stdout,
        "kubernetes": _kubernetes,
        "argo-server": _argo_server,
    }
)


# The class of each kind, as "module:Class": what a sink of that kind can do (list and
# stop Workflows, batch creates) is known from it without opening one.
TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "local": "trigger.submit.local:LocalSink",
        "stdout": "trigger.submit.stdout:StdoutSink",
        "kubernetes": "trigger.submit.kubernetes:KubernetesSink",
        "argo-server": "trigger.submit.argo_server:ArgoServerSink",
    }
)


def sink_type(spec: str) -> type:
    """The class of the sink a `--sink` value names (imported, not opened)."""
    kind = spec.partition(":")[0].strip()
    if kind not in TYPES:
        known = ", ".join(sorted(TYPES))
        raise ConfigError(f"unknown sink {kind!r}: expected one of {known}")
    module, _, name = TYPES[kind].partition(":")
    found: type = getattr(importlib.import_module(module), name)
    return found


async def open_sink(spec: str, **options: Any) -> Sink:
    """Open the sink a `--sink` value names; ConfigError for unknown kinds or options."""
    kind, _, argument = spec.partition(":")
    factory = SINKS.get(kind.strip())
    if factory is None:
        known = ", ".join(sorted(SINKS))
        raise ConfigError(f"unknown sink {kind!r}: expected one of {known}")
    try:
        return await factory(argument.strip(), dict(options))
    except TypeError as exc:  # an option the sink does not have
        raise ConfigError(f"sink {kind}: {exc}") from exc
