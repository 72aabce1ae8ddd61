"""Event sources: one module (or package) per kind, sharing only `base`; the daemon's
registry (trigger.daemon.sources) is the one place that names them all."""
