"""Files the daemon writes, when they cannot be written: one error, one observer.

Every file the daemon writes — the local sink's manifests, the dead-letter file, the
state file — turns a failed write (a full disk, a quota, an I/O error) into a
`StorageError`: temporary, because nothing was acknowledged, so a push is answered 503
with `Retry-After` and a Kafka partition waits instead of moving past the data. Each
writer also tells an optional `StorageObserver`, through which the daemon counts
`trigger_storage_errors_total{target,error}` and writes one structured log line — never
a traceback, since a full disk is an operator's condition, not a bug.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Final

from trigger.errors import StorageError

StorageObserver = Callable[[StorageError], None]
RETRY_AFTER: Final = 10.0  # seconds: a full disk is not freed in a second


def errno_name(error: OSError) -> str:
    """`ENOSPC`, `EDQUOT`, `EIO`…; `OSError` when the error carries no number."""
    return errno.errorcode.get(error.errno or 0, "OSError")


def storage_error(target: str, what: str, error: OSError) -> StorageError:
    """The error for a failed write of `what` (a path) by `target` (`local-sink`,
    `dead-letters`, `state`)."""
    reason = error.strerror or str(error)
    return StorageError(
        f"{what}: cannot write: {errno_name(error)} ({reason})",
        target=target,
        error=error,
        retry_after=RETRY_AFTER,
    )


def report(error: StorageError, observer: StorageObserver | None) -> StorageError:
    """Tell the observer (if any) and hand the error back, for `raise report(...)`."""
    if observer is not None:
        observer(error)
    return error
