"""What the `workflow` source needs of the daemon's sink: judged without importing the
Kubernetes client (`trigger validate` and the verdicts use it)."""

from __future__ import annotations


def sink_problem(sink_type: type) -> str | None:
    """Why `workflow` rules cannot run with sinks of this class, or None."""
    kind = getattr(sink_type, "kind", sink_type.__name__)
    if kind in ("kubernetes", "local"):
        return None
    return (
        "the workflow source follows Workflows through the Kubernetes API or the local "
        f"sink's directory: use --sink kubernetes or local:DIR (the {kind} sink cannot)"
    )
