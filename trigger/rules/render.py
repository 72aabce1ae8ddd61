"""The renderer: (Rule, Event) → the Workflow object to create. Pure; no I/O.

The Workflow's name is `<generateName><hash>`, the hash taken over the rule name and the
rendered idempotency key (default: the event id), so the same event gives the same name
on every replica and every retry, and the backend's AlreadyExists enforces "at most once".
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any, Final

from trigger.errors import RenderError, TriggerError
from trigger.events import Event
from trigger.rules.rule import Rule

GROUP: Final = "argoproj.io"
VERSION: Final = "v1alpha1"
LABEL_RULE: Final = "trigger.dev/rule"
LABEL_SOURCE: Final = "trigger.dev/source"
ANNOTATION_EVENT_ID: Final = "trigger.dev/event-id"
ANNOTATION_EVENT_SOURCE: Final = "trigger.dev/event-source"
ANNOTATION_EVENT_TYPE: Final = "trigger.dev/event-type"
ANNOTATION_EVENT_SUBJECT: Final = "trigger.dev/event-subject"
ANNOTATION_IDEMPOTENCY_KEY: Final = "trigger.dev/idempotency-key"
HASH_LENGTH: Final = 12
MAX_NAME: Final = 63


def workflow_name(rule: Rule, key: str) -> str:
    """`<generateName><hash>`, at most 63 characters, a valid DNS-1123 name."""
    digest = hashlib.sha256(f"{rule.name}\0{key}".encode()).hexdigest()[:HASH_LENGTH]
    prefix = rule.generate_name[: MAX_NAME - HASH_LENGTH]
    return f"{prefix}{digest}"


def idempotency_key(rule: Rule, event: Event, context: Mapping[str, Any]) -> str:
    if rule.idempotency_key is None:
        return event.id
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
                str(exc), rule=rule.name, field=f"parameters.{name}", event_id=event.id
            ) from exc
    return values


def render(rule: Rule, event: Event) -> dict[str, Any]:
    """The Workflow for this (rule, event); raises RenderError when a template fails."""
    context = {"event": event.doc, "rule": rule.context}
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
