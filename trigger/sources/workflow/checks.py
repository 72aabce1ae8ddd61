"""What the `workflow` source needs of the daemon's sink: judged without importing the
Kubernetes client (`trigger validate` and the verdicts use it)."""

from __future__ import annotations


def sink_problem(sink_type: type) -> str | None:
    """Why `workflow` rules cannot run with sinks of this class, or None."""
    if getattr(sink_type, "kind", None) == "kubernetes":
        return None
    kind = getattr(sink_type, "kind", sink_type.__name__)
    return (
        "the workflow source watches Workflows through the Kubernetes API: use "
        f"--sink kubernetes (the {kind} sink cannot watch them)"
    )
