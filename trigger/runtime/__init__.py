"""The daemon: supervision, HTTP, state, leadership, the event pipeline."""
