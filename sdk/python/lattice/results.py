"""Turning a final task (a ``TaskInfo`` JSON object) into a value or an
exception."""

from __future__ import annotations

import base64
import builtins
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Optional

from lattice import serialize
from lattice.errors import RemoteError, RemoteTraceback, TaskFailed, task_error


@dataclass
class Outcome:
    ok: bool
    value: Any = None
    error: Optional[BaseException] = None

    def unwrap(self) -> Any:
        if self.ok:
            return self.value
        assert self.error is not None
        raise self.error


def rebuild_exception(exception: Dict[str, Any], task_id: str = "") -> BaseException:
    """The remote exception as its own type where possible (from its pickle,
    else a builtin type by name), else :class:`RemoteError`; the remote
    traceback is attached as ``__cause__`` (and as a note on 3.11+)."""
    type_name = exception.get("type_name") or "Exception"
    message = exception.get("message") or ""
    traceback = exception.get("traceback") or ""
    error: Optional[BaseException] = None
    payload = exception.get("payload")
    if payload:
        try:
            loaded = pickle.loads(base64.b64decode(payload))
            if isinstance(loaded, BaseException):
                error = loaded
        except Exception:  # noqa: BLE001 - e.g. the type's module is not installed here
            error = None
    if error is None and "." not in type_name:
        kind = getattr(builtins, type_name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException):
            try:
                error = kind(message)
            except Exception:  # noqa: BLE001 - constructors with other signatures
                error = None
    if error is not None and not isinstance(error, Exception):
        # SystemExit, KeyboardInterrupt... raised remotely must not stop this process.
        error = None
    if error is None:
        error = RemoteError(type_name, message, traceback, task_id)
    if traceback:
        error.__cause__ = RemoteTraceback(traceback)
    if hasattr(error, "add_note") and task_id:
        try:
            error.add_note(f"(raised on the endpoint by Lattice task {task_id})")
        except Exception:  # noqa: BLE001
            pass
    return error


def outcome(task: Dict[str, Any], function: Any) -> Outcome:
    """``function`` is the submitted ShellFunction / WasmFunction (whose
    results are :class:`ShellResult`), or ``None`` for Python functions."""
    state = task.get("state")
    task_id = str(task.get("id", ""))
    result = task.get("result") or {}
    kind = getattr(function, "kind", "python")
    if kind in ("shell", "wasm", "container"):
        error = task.get("error") or ""
        if state == "success" or (state == "failed" and result and not error.lower().startswith("timeout")
                                  and not error.lower().startswith("output limit")
                                  and not error.lower().startswith("memory limit")):
            return Outcome(True, function.result(task))
        return Outcome(False, error=task_error(task))
    if state == "success":
        try:
            return Outcome(True, serialize.deserialize_value(result.get("value")))
        except Exception as e:  # noqa: BLE001 - the result's type is not importable here
            failure = TaskFailed(task_id, f"cannot deserialize the result here: {type(e).__name__}: {e}", task)
            failure.__cause__ = e
            return Outcome(False, error=failure)
    if state == "failed" and result.get("exception"):
        return Outcome(False, error=rebuild_exception(result["exception"], task_id))
    return Outcome(False, error=task_error(task))
