"""What the emulator says it serves: the version and API discovery documents.

Clients such as kubectl and kubernetes_asyncio's dynamic client read these to learn which
resources exist; they list the known resource types (`resources.KNOWN`) with their scope
and verbs.
"""

from __future__ import annotations

from trigger.testing.kubeapi.resources import JSON, KNOWN, Resource


def documents(cluster_scoped: frozenset[str]) -> dict[str, JSON]:
    """The discovery documents by path: /version, /api, /apis and one per group version."""
    groups = sorted({(g, v) for g, v, _, _ in KNOWN if g})
    served: dict[str, JSON] = {
        "/version": {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-emulator",
            "platform": "linux/amd64",
        },
        "/api": {"kind": "APIVersions", "versions": ["v1"]},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                    "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v},
                }
                for g, v in groups
            ],
        },
    }
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
    for group, version in [("", "v1"), *groups]:
        api_version = Resource(group, version, "").api_version
        resources = [
            {
                "name": p,
                "namespaced": p not in cluster_scoped,
                "kind": k,
                "verbs": verbs,
            }
            for g, v, p, k in KNOWN
            if (g, v) == (group, version)
        ]
        served["/api/v1" if not group else f"/apis/{api_version}"] = {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": api_version,
            "resources": resources,
        }
    return served
