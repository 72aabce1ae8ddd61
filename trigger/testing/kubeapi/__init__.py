"""A Kubernetes API server emulator for tests, served over real HTTP by aiohttp.

The real `kubernetes_asyncio` client talks to it on a loopback port. It keeps objects in
dicts keyed by resource and (namespace, name), and answers like the real server for every
call trigger makes: create (with `generateName`, uid, resourceVersion, creationTimestamp,
generation), get, list (label and field selectors, `limit`/`continue`), replace and patch
with optimistic concurrency, delete (with finalizers), the `/status` subresource, and watch
with replay from a resourceVersion, `timeoutSeconds`, bookmarks and 410 on a compacted
history. Failures are `Status` objects like the server's, including the size limits: 413
for a request body over 3 MiB, 500 "etcdserver: request is too large" for an object over
1.5 MiB. Tests can inject failures for the next N matching requests (before any state
change), make matching requests slow (`delay`: hold the request before it is served, or
serve it and hold the answer, for a fixed or drawn time on an injectable `sleep`, so a
test can slow the API down in virtual time), seed and inspect objects directly, count
requests, and end a Workflow as Argo's controller does (`finish_workflow`: final phase,
times, output parameters, the `workflows.argoproj.io/completed` label).

Known simplifications: every custom resource accepts `/status` (Argo's CRDs do not enable
the subresource, so main-resource writes also change `status`); strategic merge patches on
built-in resources are applied as JSON merge patches; server-side apply, dryRun, and
namespace termination (deletion is immediate and cascades) are not emulated.

Run standalone with `python -m trigger.testing.kubeapi --port 0 --namespaces default,data`;
it prints `READY http://127.0.0.1:PORT` once listening and serves until SIGTERM.

The modules, from the bottom up: `resources` (resource types, object keys), `errors`
(Status bodies), `selectors`, `patching`, `validation`, `store` (objects, versions, change
history, watchers), `watch` (the streaming verb), `discovery`, `routing` (paths and verbs),
`faults` (injected failures and delays), `server` (`KubeEmulator`), `__main__`.
"""

from trigger.testing.kubeapi.errors import ApiStatusError
from trigger.testing.kubeapi.faults import Admission, Delay, Injection, Lost, Sleep
from trigger.testing.kubeapi.patching import json_patch, merge_patch
from trigger.testing.kubeapi.resources import JSON
from trigger.testing.kubeapi.selectors import (
    parse_field_selector,
    parse_label_selector,
    selector_matches,
)
from trigger.testing.kubeapi.server import MAX_OBJECT_BYTES, MAX_REQUEST_BYTES, KubeEmulator
from trigger.testing.kubeapi.store import Clock

__all__ = [
    "JSON",
    "MAX_OBJECT_BYTES",
    "MAX_REQUEST_BYTES",
    "Admission",
    "ApiStatusError",
    "Clock",
    "Delay",
    "Injection",
    "KubeEmulator",
    "Lost",
    "Sleep",
    "json_patch",
    "merge_patch",
    "parse_field_selector",
    "parse_label_selector",
    "selector_matches",
]
