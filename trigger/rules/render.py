"""The renderer: (Rule, Event) → the Workflow object to create. Pure; no I/O.

The Workflow's name is `<generateName><hash>`, the hash taken over the rule name and the
rendered idempotency key (default: the event id), so the same event gives the same name
on every replica and every retry, and the backend's AlreadyExists enforces "at most once".

The hash is 100 bits of SHA-256 in 20 base32 characters: for one rule, two keys share a
name with odds of about n²/2¹⁰¹ — 4·10⁻¹¹ after ten billion Workflows. Argo refuses
Workflow names over 63 characters, so `generateName` may use the other 43. Should a name
still be taken by a Workflow of another (rule, key) — a collision, or an object someone
made by hand — the sink says so (`NameTaken`) and the submitter tries the next name of a
short deterministic sequence (`workflow_name(rule, key, attempt)`), which every replica
and retry walks in the same order.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from trigger.errors import RenderError, TriggerError
from trigger.events import ANNOTATION_EVENT_ID, Event, default_idempotency_key
from trigger.rules.model import GENERATE_NAME_MAX
from trigger.rules.queue import LABEL_QUEUE, semaphore
from trigger.rules.rule import Rule

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
LABEL_RULE: Final = "trigger.dev/rule"
LABEL_SOURCE: Final = "trigger.dev/source"
ANNOTATION_EVENT_SOURCE: Final = "trigger.dev/event-source"
ANNOTATION_EVENT_TYPE: Final = "trigger.dev/event-type"
ANNOTATION_EVENT_SUBJECT: Final = "trigger.dev/event-subject"
ANNOTATION_IDEMPOTENCY_KEY: Final = "trigger.dev/idempotency-key"
HASH_LENGTH: Final = 20  # base32 characters: 100 bits
MAX_NAME: Final = 63  # Argo's limit for a Workflow name (Kubernetes would allow 253)
MAX_PREFIX: Final = GENERATE_NAME_MAX
assert MAX_PREFIX + HASH_LENGTH == MAX_NAME
MAX_ALTERNATES: Final = 8  # names tried after the first one is taken by another key


def name_hash(rule: str, key: str, attempt: int = 0) -> str:
    """The 20-character hash of a Workflow name: lower-case base32 (a-z, 2-7)."""
    text = f"{rule}\0{key}" if attempt == 0 else f"{rule}\0{key}\0{attempt}"
    digest = hashlib.sha256(text.encode()).digest()
    # The first 20 base32 characters are the first 100 bits: encoding the first 15 bytes
    # (three 5-byte groups) gives them without encoding the whole digest.
    return base64.b32encode(digest[:15])[:HASH_LENGTH].lower().decode("ascii")


def workflow_name(rule: Rule, key: str, attempt: int = 0) -> str:
    """`<generateName><hash>`, at most 63 characters, a valid DNS-1123 name; `attempt`
    > 0 gives the alternates used when the name is taken by another key."""
    return f"{rule.generate_name[:MAX_PREFIX]}{name_hash(rule.name, key, attempt)}"


def idempotency_key(rule: Rule, event: Event, context: Mapping[str, Any]) -> str:
    if rule.idempotency_key is None:
        return default_idempotency_key(event)
    try:
        return rule.idempotency_key.render(context)
    except TriggerError as exc:
        raise RenderError(
            str(exc), rule=rule.name, field="idempotencyKey", event_id=event.id
        ) from exc


def render_parameters(rule: Rule, event: Event, context: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, template in rule.parameters:
        try:
            values[name] = template.render(context)
        except TriggerError as exc:
            raise RenderError(
                str(exc), rule=rule.name, field=f"workflow.parameters.{name}", event_id=event.id
            ) from exc
    return values


def render(rule: Rule, event: Event) -> dict[str, Any]:
    """The Workflow for this (rule, event); raises RenderError when a template fails."""
    context = {"event": event.doc, "rule": rule.context}
    if rule.gate is None and "gate" in event.fields:  # a gate firing (trigger.core.gatekeeper)
        context["gate"] = event.fields["gate"]
    key = idempotency_key(rule, event, context)
    parameters = render_parameters(rule, event, context)
    return build_workflow(rule, workflow_name(rule, key), parameters, event=event, key=key)


def build_workflow(
    rule: Rule,
    name: str,
    parameters: Mapping[str, str],
    *,
    event: Event | None,
    key: str,
) -> dict[str, Any]:
    """Assemble the Workflow object from already rendered parts."""
    spec_in = rule.workflow
    labels = {**spec_in.labels, LABEL_RULE: rule.name, LABEL_SOURCE: rule.kind}
    if spec_in.queue is not None:
        labels[LABEL_QUEUE] = spec_in.queue
    annotations = dict(spec_in.annotations)
    annotations[ANNOTATION_IDEMPOTENCY_KEY] = key
    if event is not None:
        annotations.update(
            {
                ANNOTATION_EVENT_ID: event.id,
                ANNOTATION_EVENT_SOURCE: event.source,
                ANNOTATION_EVENT_TYPE: event.type,
                ANNOTATION_EVENT_SUBJECT: event.subject,
            }
        )
    template_ref: dict[str, Any] = {"name": spec_in.template}
    if spec_in.clusterScope:
        template_ref["clusterScope"] = True
    spec: dict[str, Any] = copy.deepcopy(spec_in.spec) if spec_in.spec else {}
    spec["workflowTemplateRef"] = template_ref
    if parameters:
        spec["arguments"] = {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]}
    if spec_in.entrypoint:
        spec["entrypoint"] = spec_in.entrypoint
    if spec_in.queue is not None:
        # Beside any mutexes the overlay declares (semaphores there are refused at load).
        spec["synchronization"] = {**spec.get("synchronization", {}), **semaphore(spec_in.queue)}
    if spec_in.priority is not None:
        spec["priority"] = spec_in.priority
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Workflow",
        "metadata": {
            "name": name,
            "namespace": spec_in.namespace,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
