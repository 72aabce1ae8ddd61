"""The daemon: assembly, supervision, the HTTP app, leadership — the only layer that knows
every source."""
