"""What a WorkflowTemplate declares, as far as the checks care, and how it is read.

A template is known by its `TemplateKey` (namespace, name, scope); `TemplateInfo` keeps its
workflow-level parameters: whether each has a default, and its enum. `parse_template`
reads a (Cluster)WorkflowTemplate object and raises `MalformedTemplate` when it cannot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple


class TemplateKey(NamedTuple):
    """Identity of a template; `namespace` is "" for a ClusterWorkflowTemplate."""

    namespace: str
    name: str
    cluster_scope: bool

    @classmethod
    def of(cls, namespace: str | None, name: str, cluster_scope: bool) -> TemplateKey:
        return cls("" if cluster_scope else namespace or "", name, cluster_scope)

    def __str__(self) -> str:
        if self.cluster_scope:
            return f"ClusterWorkflowTemplate {self.name}"
        return f"WorkflowTemplate {self.namespace}/{self.name}"


@dataclass(frozen=True)
class TemplateParameter:
    """One of a template's `spec.arguments.parameters`."""

    name: str
    has_default: bool  # `value`, `default` or `valueFrom`: a Workflow need not supply it
    enum: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TemplateInfo:
    """What the checks need to know about one template."""

    name: str
    namespace: str  # "" when cluster-scoped
    cluster_scope: bool
    parameters: tuple[TemplateParameter, ...] = ()
    # The output parameters its entrypoint declares (a finished Workflow's `outputs`), or
    # None when the template does not say (no entrypoint, or none of that name).
    outputs: tuple[str, ...] | None = None

    @property
    def key(self) -> TemplateKey:
        return TemplateKey.of(self.namespace, self.name, self.cluster_scope)

    def parameter(self, name: str) -> TemplateParameter | None:
        return next((p for p in self.parameters if p.name == name), None)

    @cached_property
    def enums(self) -> dict[str, TemplateParameter]:
        """The parameters that declare an `enum`, by name: all a rendered Workflow's values
        are checked against (made once per template, not once per Workflow)."""
        return {p.name: p for p in self.parameters if p.enum is not None}


class MalformedTemplate(ValueError):
    """A template object the catalog cannot read; `key` is set when its name is known."""

    def __init__(self, message: str, key: TemplateKey | None = None) -> None:
        super().__init__(message)
        self.key = key


def parse_template(obj: Any, *, cluster_scope: bool | None = None) -> TemplateInfo:
    """Read a (Cluster)WorkflowTemplate object; raises MalformedTemplate.

    `cluster_scope` None takes the scope from the object's `kind`.
    """
    if not isinstance(obj, Mapping):
        raise MalformedTemplate("not an object")
    if cluster_scope is None:
        cluster_scope = obj.get("kind") == "ClusterWorkflowTemplate"
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    namespace = meta.get("namespace") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise MalformedTemplate("metadata.name is missing")
    if not cluster_scope and (not isinstance(namespace, str) or not namespace):
        raise MalformedTemplate(f"template {name}: metadata.namespace is missing")
    key = TemplateKey.of(namespace, name, cluster_scope)
    try:
        parameters = _parameters(obj.get("spec"))
    except MalformedTemplate as exc:
        raise MalformedTemplate(f"{key}: {exc}", key) from exc
    return TemplateInfo(name, key.namespace, cluster_scope, parameters, _outputs(obj.get("spec")))


def _outputs(spec: Any) -> tuple[str, ...] | None:
    """The names of the entrypoint's `outputs.parameters`; None when they are not known."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("templates"), list):
        return None
    entry = spec.get("entrypoint")
    found = [t for t in spec["templates"] if isinstance(t, Mapping) and t.get("name") == entry]
    if not found:
        return None
    outputs = found[0].get("outputs")
    params = outputs.get("parameters") if isinstance(outputs, Mapping) else None
    if not isinstance(params, list):
        return ()
    return tuple(
        p["name"] for p in params if isinstance(p, Mapping) and isinstance(p.get("name"), str)
    )


def _parameters(spec: Any) -> tuple[TemplateParameter, ...]:
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise MalformedTemplate("spec is not an object")
    arguments = spec.get("arguments") or {}
    raw = arguments.get("parameters") if isinstance(arguments, Mapping) else None
    if not isinstance(arguments, Mapping) or not isinstance(raw or [], list):
        raise MalformedTemplate("spec.arguments.parameters is not a list")
    return tuple(_parameter(i, item) for i, item in enumerate(raw or []))


def _parameter(index: int, item: Any) -> TemplateParameter:
    where = f"spec.arguments.parameters[{index}]"
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise MalformedTemplate(f"{where} has no name")
    enum = item.get("enum")
    if enum is not None and not (
        isinstance(enum, list) and all(scalar_text(v) is not None for v in enum)
    ):
        raise MalformedTemplate(f"{where}.enum is not a list of scalars")
    has_default = any(item.get(k) is not None for k in ("value", "default", "valueFrom"))
    values = None if enum is None else tuple(str(scalar_text(v)) for v in enum)
    return TemplateParameter(item["name"], has_default, values)


def scalar_text(value: Any) -> str | None:
    """Argo's enum values are strings; YAML numbers and booleans are written as YAML would."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None
