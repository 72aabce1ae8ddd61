"""The whole exception tree of trigger.

Load-time problems (`ConfigError`, `RuleError`) carry where they come from; per-event
problems (`DecodeError`, `RenderError`) are poison for that event; `SubmitError` is split
into permanent and temporary at the client boundary so no client exception leaks inward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TriggerError(Exception):
    """Base of every error trigger raises on purpose."""


class ConfigError(TriggerError):
    """The daemon's configuration is invalid."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a rule file, located as precisely as the YAML allows."""

    file: str
    line: int
    column: int
    rule: str | None
    message: str

    def __str__(self) -> str:
        who = f"rule {self.rule}: " if self.rule else ""
        message = " ".join(self.message.split("\n"))  # one problem, one line
        return f"{self.file}:{self.line}:{self.column}: {who}{message}"


class RuleError(TriggerError):
    """One or more rule files are invalid; `problems` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DecodeError(TriggerError):
    """An incoming payload cannot be decoded; the message says what and where."""

    def __init__(self, message: str, *, where: str = "") -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class PatternError(TriggerError):
    """A content pattern is invalid; `path` is the key path inside the pattern."""

    def __init__(self, message: str, *, path: Sequence[str | int] = ()) -> None:
        self.path = tuple(path)
        super().__init__(message)

    @property
    def errors(self) -> tuple[PatternError, ...]:
        """Every problem found in the pattern: this one alone, or all of PatternErrors."""
        return (self,)


class PatternErrors(PatternError):
    """Several problems in one content pattern, all of them (the first gives `path`)."""

    def __init__(self, errors: Sequence[PatternError]) -> None:
        self._errors = tuple(one for error in errors for one in error.errors)
        first = self._errors[0]
        super().__init__("; ".join(str(e) for e in self._errors), path=first.path)

    @property
    def errors(self) -> tuple[PatternError, ...]:
        return self._errors


class ExpressionError(TriggerError):
    """A CEL expression does not compile, or failed for one event."""


class TemplateError(TriggerError):
    """A template does not compile (load time)."""


class RenderError(TriggerError):
    """A template failed for one event: poison for that (rule, event)."""

    def __init__(self, message: str, *, rule: str, field: str, event_id: str) -> None:
        self.rule = rule
        self.field = field
        self.event_id = event_id
        super().__init__(f"rule {rule}: {field}: event {event_id}: {message}")


class SubmitError(TriggerError):
    """Creating a Workflow failed. Subclasses say whether a retry can help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class PermanentSubmitError(SubmitError):
    """The backend rejected the Workflow (400, 401, 403, 404, 422): retrying cannot help."""


class WorkflowTooLarge(PermanentSubmitError):
    """The Workflow is larger than the backend stores (etcd keeps at most 1.5 MiB per
    object): poison, dead-lettered with its size, never retried."""


class TemporarySubmitError(SubmitError):
    """The backend is unavailable or throttling (429, 5xx, timeouts, connection errors)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class StorageError(TemporarySubmitError):
    """A file the daemon writes (a manifest, a dead letter, state) could not be written —
    a full disk, a quota, an I/O error. Nothing was acknowledged: temporary, so a push is
    answered 503 with Retry-After and a Kafka partition waits."""

    def __init__(
        self, message: str, *, target: str, error: OSError, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.target = target
        self.error = error


class AlreadyExists(TriggerError):  # it is an outcome, not a failure
    """The Workflow already exists: the idempotent outcome of a redelivery, a success."""


class NameTaken(TriggerError):
    """The Workflow's name is held by an object of another (rule, idempotency key) — a
    hash collision, or something made by hand: not a duplicate, never an acknowledgement.
    The submitter moves on to the rule's next deterministic name."""


class SourceError(TriggerError):
    """A source's transport failed; the source retries with backoff."""
