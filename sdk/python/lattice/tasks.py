"""``TaskInfo``: a task as the service reports it (``TaskInfo`` in
``protocol/src/compute.rs``), with its ``TaskResult`` and, for a function
that raised, its ``ExceptionInfo``.

Each is a ``dict`` (the JSON object as it came, so ``task["state"]``,
``task.get("worker")``, ``"result" in task``, iteration and ``json.dumps``
work as on any dict) whose keys are also attributes: ``task.state``,
``task.result.stdout``. A documented key the service left out (it omits
some that are empty) reads as ``None``; any other name raises
``AttributeError``. Timestamps stay RFC 3339 strings.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, FrozenSet, List, Optional


class _Record(dict):
    """A JSON object of the API: a dict whose keys are also attributes."""

    __slots__ = ()
    #: The documented keys (the class's annotations).
    _fields: ClassVar[FrozenSet[str]] = frozenset()
    #: Keys whose objects are records too.
    _nested: ClassVar[Dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = frozenset(name for name in cls.__dict__.get("__annotations__", {})
                                if not name.startswith("_"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for key, kind in self._nested.items():
            value = self.get(key)
            if isinstance(value, dict) and not isinstance(value, kind):
                self[key] = kind(value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails, so dict methods come first.
        if not name.startswith("__"):
            if name in self:
                return self[name]
            if name in self._fields:
                return None
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __dir__(self) -> List[str]:
        keys = {key for key in self if isinstance(key, str) and key.isidentifier()}
        return sorted(set(super().__dir__()) | self._fields | keys)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict.__repr__(self)})"


class ExceptionInfo(_Record):
    """The exception a Python function raised on the endpoint
    (``RemoteException`` of the API)."""

    __slots__ = ()
    #: Qualified type name: ``ValueError``, ``numpy.linalg.LinAlgError``, ...
    type_name: str
    #: ``str(exception)``.
    message: str
    #: The remote traceback as Python prints it, from the function's own code.
    traceback: str
    #: base64 of the pickled exception, when it pickles.
    payload: Optional[str]


class TaskResult(_Record):
    """What a finished call produced."""

    __slots__ = ()
    _nested = {"exception": ExceptionInfo}
    #: Tail of standard output (64 KiB).
    stdout: str
    #: Tail of standard error.
    stderr: str
    #: Exit status of a shell, container or Wasm task.
    returncode: Optional[int]
    #: base64 of the pickled return value of a Python function.
    value: Optional[str]
    #: The exception a Python function raised.
    exception: Optional[ExceptionInfo]


class TaskInfo(_Record):
    """A task: ``LatticeFuture.task``, ``TaskFailed.task``,
    ``Client.get_task()``."""

    __slots__ = ()
    _nested = {"result": TaskResult}
    id: str
    #: ``waiting``, ``dispatched``, ``running``, ``success``, ``failed`` or ``cancelled``.
    state: str
    function_id: str
    endpoint_id: str
    batch_id: str
    owner_id: str
    #: The argument map as submitted.
    args: Dict[str, Any]
    result: Optional[TaskResult]
    #: Why the task failed (``timeout: ...``, ``ValueError: ...``).
    error: Optional[str]
    submitted_at: str
    dispatched_at: Optional[str]
    started_at: Optional[str]
    finished_at: Optional[str]
    #: The worker that ran the final attempt.
    worker: Optional[str]
    #: Deliveries to an agent so far.
    attempts: int
    max_retries: int
    walltime_secs: int
    #: Final results that arrived after the first one and were dropped.
    duplicate_results: int
    #: For a task not final yet: why its endpoint cannot run it now.
    endpoint_problem: Optional[str]
    #: The variables submitted for a multi-user endpoint's user config.
    user_endpoint_config: Optional[Dict[str, Any]]
