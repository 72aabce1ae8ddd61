"""Sandboxed Jinja2 templates for rule parameters and idempotency keys (DESIGN §3).

Rule authors write `"oss://{{ event.bucket }}/{{ event.key }}"`; the engine compiles each
distinct source once, at load time, in an immutable sandbox with strict undefined. Renders
are pure and deterministic (no `now`, no `random`) because the idempotency key is rendered
from the same templates. Beyond Jinja's own sandbox, this module refuses the ways a short
template can eat memory or CPU: string/list repetition, big powers, wide format specs,
amplifying filters, huge ranges, nested loops, macros; and it caps every rendered value.

Values always render to `str` (Argo parameters are strings). Containers, booleans and
`None` render as compact JSON so `{{ event.value }}` hands a workflow usable JSON.

The modules: `sandbox` (the limits, the checks and the sandboxed environment), `filters`
(the filter table) and `engine` (`TemplateEngine`, `Template`).
"""

from trigger.rules.templating.engine import MAX_OUTPUT_BYTES, Template, TemplateEngine
from trigger.rules.templating.filters import MAX_STRFTIME_WIDTH, REGEX_CACHE_SIZE
from trigger.rules.templating.sandbox import (
    MAX_INT_BITS,
    MAX_RANGE,
    MAX_VALUE_LEN,
    TemplateRenderFailure,
)

__all__ = [
    "MAX_INT_BITS",
    "MAX_OUTPUT_BYTES",
    "MAX_RANGE",
    "MAX_STRFTIME_WIDTH",
    "MAX_VALUE_LEN",
    "REGEX_CACHE_SIZE",
    "Template",
    "TemplateEngine",
    "TemplateRenderFailure",
]
