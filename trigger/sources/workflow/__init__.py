"""The `workflow` source: a rule fires when an Argo Workflow finishes (chaining).

`feed` lists and watches finished Workflows through the API server; `source` turns them
into events exactly once per (Workflow, rule), from a persisted resourceVersion watermark.
"""
