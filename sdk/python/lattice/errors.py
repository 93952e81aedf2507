"""Errors of the SDK. Each one names the problem and, where there is one,
the next step.

``LatticeError``
    ``NotConfigured``: no service URL or token.
    ``APIError``: the service refused a request (``status``, ``code``, ``message``).
        ``AuthExpired`` (401), ``Forbidden`` (403) and its ``FunctionNotAllowed``.
    ``TaskFailed``: a task ended ``failed`` for a reason other than an
    exception of the function (``task_id``, ``error``, ``task``).
        ``TaskTimeout``, ``WorkerLost``, ``PythonVersionMismatch``,
        ``ResultTooLarge``, ``FunctionNotAllowed`` (also an ``APIError``).
    ``RemoteError``: the function raised an exception whose type cannot be
    rebuilt here (``type_name``, ``remote_message``, ``remote_traceback``).

Exceptions raised by the function itself are re-raised as their own type
with a :class:`RemoteTraceback` as ``__cause__``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

RELOGIN_HINT = (
    "log in again: `lattice login` in a terminal, or `lattice.login()` in a notebook"
)


class LatticeError(Exception):
    """Base class of the SDK's errors."""


class NotConfigured(LatticeError):
    """No service URL or token is known."""


class APIError(LatticeError):
    """The service answered with an error body ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str, request_id: Optional[str] = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        text = f"{code} ({status}): {message}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text)


class AuthExpired(APIError):
    """The token is missing, expired or revoked."""

    def __init__(self, status: int, code: str, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(status, code, f"{message}; {RELOGIN_HINT}", request_id)


class Forbidden(APIError):
    """The token is valid but may not do this."""


class EndpointOffline(UserWarning):
    """Warning: the endpoint is offline; tasks are queued until it connects."""


class TaskFailed(LatticeError):
    """A task failed for a reason other than an exception of the function."""

    def __init__(self, task_id: str, error: str, task: Optional[Dict[str, Any]] = None) -> None:
        self.task_id = task_id
        self.error = error
        self.task = task or {}
        super().__init__(f"task {task_id} failed: {error}")

    @property
    def result(self) -> Optional[Dict[str, Any]]:
        """The task's ``result`` object (stdout, stderr, ...), if any."""
        return self.task.get("result")


class TaskTimeout(TaskFailed):
    """The task ran past its walltime and was killed."""


class WorkerLost(TaskFailed):
    """The worker running the task died more often than the task's retries allow."""


class PythonVersionMismatch(TaskFailed):
    """The function was serialized by another Python ``major.minor`` than
    the endpoint runs; the message names both."""


class ResultTooLarge(TaskFailed):
    """The function's result is over the inline result limit."""


class FunctionNotAllowed(TaskFailed, Forbidden):
    """The endpoint does not run this function."""

    def __init__(self, task_id: str, error: str, task: Optional[Dict[str, Any]] = None,
                 status: int = 403, code: str = "forbidden") -> None:
        TaskFailed.__init__(self, task_id, error, task)
        self.status = status
        self.code = code
        self.message = error
        self.request_id = None


class TaskCancelled(TaskFailed):
    """The task was cancelled (``lattice task cancel`` or the API)."""


class RemoteTraceback(Exception):
    """Carries the remote traceback text; set as ``__cause__`` of a
    re-raised remote exception so that it prints under it."""

    def __init__(self, traceback: str) -> None:
        self.traceback = traceback
        super().__init__(traceback)

    def __str__(self) -> str:
        return "\n\nRemote traceback (on the endpoint):\n" + self.traceback.rstrip()


class RemoteError(LatticeError):
    """The function raised an exception whose type cannot be rebuilt here."""

    def __init__(self, type_name: str, message: str, traceback: str = "", task_id: str = "") -> None:
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback
        self.task_id = task_id
        super().__init__(f"{type_name}: {message}" if message else type_name)


def task_error(task: Dict[str, Any]) -> TaskFailed:
    """The error a failed task (without a Python exception) stands for."""
    task_id = str(task.get("id", ""))
    error = task.get("error") or f"task ended {task.get('state')}"
    state = task.get("state")
    if state == "cancelled":
        return TaskCancelled(task_id, "cancelled", task)
    lowered = error.lower()
    if lowered.startswith("timeout"):
        return TaskTimeout(task_id, error, task)
    if lowered.startswith("python version mismatch"):
        return PythonVersionMismatch(task_id, error, task)
    if lowered.startswith("result too large"):
        return ResultTooLarge(task_id, error, task)
    if lowered.startswith("worker lost"):
        return WorkerLost(task_id, error, task)
    if "not allowed" in lowered:
        return FunctionNotAllowed(task_id, error, task)
    return TaskFailed(task_id, error, task)
