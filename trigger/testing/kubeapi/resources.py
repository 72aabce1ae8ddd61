"""The resource types the emulator serves, and how a stored object is keyed.

A resource type is its group, version and plural; its kind, scope and whether it behaves
like a custom resource follow from those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

JSON = dict[str, Any]

KNOWN: Final = (
    ("argoproj.io", "v1alpha1", "workflows", "Workflow"),
    ("argoproj.io", "v1alpha1", "workflowtemplates", "WorkflowTemplate"),
    ("argoproj.io", "v1alpha1", "clusterworkflowtemplates", "ClusterWorkflowTemplate"),
    ("argoproj.io", "v1alpha1", "cronworkflows", "CronWorkflow"),
    ("coordination.k8s.io", "v1", "leases", "Lease"),
    ("", "v1", "configmaps", "ConfigMap"),
    ("", "v1", "secrets", "Secret"),
    ("", "v1", "events", "Event"),
    ("", "v1", "namespaces", "Namespace"),
)
KINDS: Final = {plural: kind for _, _, plural, kind in KNOWN}
CLUSTER_SCOPED: Final = frozenset(
    {
        "namespaces",
        "clusterworkflowtemplates",
        "nodes",
        "persistentvolumes",
        "customresourcedefinitions",
    }
)
# Built-in groups: updates without a resourceVersion are unconditional, deletes answer with a
# Status, objects carry no generation. Everything else behaves like a custom resource.
_BUILTIN_GROUPS: Final = frozenset({"", "coordination.k8s.io", "apps", "batch"})


@dataclass(frozen=True)
class Resource:
    """A resource type, as a request path names it: group, version and plural."""

    group: str
    version: str
    plural: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind(self) -> str:
        return KINDS.get(self.plural) or self.plural.removesuffix("s").capitalize()

    @property
    def custom(self) -> bool:
        return self.group not in _BUILTIN_GROUPS

    def details(self, name: str) -> JSON:
        found: JSON = {"name": name, "group": self.group, "kind": self.plural}
        return {k: v for k, v in found.items() if v}


NAMESPACES: Final = Resource("", "v1", "namespaces")


def key_of(obj: JSON) -> tuple[str, str]:
    """(namespace, name): where the store files an object, and the order lists use."""
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]
