"""Event sources: one module per kind, each registered in trigger.runtime.daemon."""
