"""What the API server refuses in an object before it stores it.

Names and labels that break the RFC 1123 and label rules, annotations that are not
strings, a ConfigMap whose `data` is not a map of strings under valid keys, and an
`apiVersion` or `kind` that contradicts the URL the object was sent to.
"""

from __future__ import annotations

import re
from typing import Any, Final

from trigger.testing.kubeapi.errors import ApiStatusError, invalid
from trigger.testing.kubeapi.resources import JSON, KINDS, NAMESPACES, Resource

_DNS_SUBDOMAIN: Final = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_PART: Final = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_CONFIGMAP_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")
CONFIGMAPS: Final = Resource("", "v1", "configmaps")


def _label_problem(key: Any, value: Any) -> str | None:
    prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "a label key prefix must be a lowercase RFC 1123 subdomain"
    if len(name) > 63 or not _LABEL_PART.fullmatch(name):
        return "a label key name must be 63 characters or less, alphanumeric, '-', '_' or '.'"
    if (
        not isinstance(value, str)
        or len(value) > 63
        or not (value == "" or _LABEL_PART.fullmatch(value))
    ):
        return "a label value must be 63 characters or less, alphanumeric, '-', '_' or '.'"
    return None


def validate(rtype: Resource, meta: JSON) -> None:
    name = meta["name"]
    pattern, limit = (_DNS_LABEL, 63) if rtype == NAMESPACES else (_DNS_SUBDOMAIN, 253)
    if not isinstance(name, str) or len(name) > limit or not pattern.fullmatch(name):
        raise invalid(
            rtype,
            str(name),
            "metadata.name",
            name,
            "a lowercase RFC 1123 name must consist of lower case alphanumeric "
            "characters, '-' or '.', and start and end with an alphanumeric character",
        )
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        raise ApiStatusError(400, "metadata.labels must be a map of strings")
    for key, value in labels.items():
        problem = _label_problem(key, value)
        if problem:
            raise invalid(rtype, name, f"metadata.labels[{key}]", value, problem)


def validate_content(rtype: Resource, obj: JSON) -> None:
    """What Go's typed decoding and validation refuse beyond metadata names and labels:
    a non-string annotation (400, the JSON does not decode), and for a ConfigMap a
    non-string `data` value (400) or a key outside [-._a-zA-Z0-9] (422)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise ApiStatusError(400, "metadata.annotations must be a map of strings")
    if rtype != CONFIGMAPS:
        return
    data = obj.get("data") or {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ApiStatusError(
            400, "json: cannot unmarshal a non-string into ConfigMap.data of type string"
        )
    for key in data:
        if len(key) > 253 or not _CONFIGMAP_KEY.fullmatch(key):
            raise invalid(
                rtype,
                str(meta.get("name")),
                f"data[{key}]",
                key,
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            )


def kind_of(rtype: Resource, body: JSON) -> str:
    """The object's kind, refusing a body whose apiVersion or kind contradicts the URL."""
    sent_version, kind = body.get("apiVersion"), body.get("kind") or rtype.kind
    if sent_version not in (None, "", rtype.api_version):
        raise ApiStatusError(
            400,
            f"the API version in the data ({sent_version}) does not "
            f"match the expected API version ({rtype.api_version})",
        )
    if rtype.plural in KINDS and kind != rtype.kind:
        raise ApiStatusError(
            400, f"the kind in the data ({kind}) does not match the expected kind ({rtype.kind})"
        )
    return str(kind)
