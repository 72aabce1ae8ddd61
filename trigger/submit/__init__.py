"""Submitting Workflows: sinks (Kubernetes, Argo Server, local, stdout), retries, limits."""
