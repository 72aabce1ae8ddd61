"""The OSS source: EventBridge and MNS pushes, and bucket polling with checkpoints."""
