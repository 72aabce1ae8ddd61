"""Reusable fakes for tests: a Kubernetes API emulator, an OSS server, a Kafka broker fixture."""
