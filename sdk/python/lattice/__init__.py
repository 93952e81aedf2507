"""Lattice Python SDK: run Python functions, shell commands and Wasm modules
on Lattice endpoints from scripts and notebooks.

>>> from lattice import Executor
>>> def double(x):
...     return 2 * x
>>> with Executor(endpoint_id=ep) as ex:       # doctest: +SKIP
...     print(ex.submit(double, 21).result())
42

The heavy parts (HTTP, WebSocket clients) load on first use, so that
``python -m lattice.worker`` on an endpoint needs only ``msgpack`` and
``cloudpickle``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "lattice.client",
    "login": "lattice.client",
    "Executor": "lattice.executor",
    "LatticeFuture": "lattice.executor",
    "ShellFunction": "lattice.functions",
    "WasmFunction": "lattice.functions",
    "ShellResult": "lattice.functions",
    "progress": "lattice.progress",
    "LatticeError": "lattice.errors",
    "APIError": "lattice.errors",
    "AuthExpired": "lattice.errors",
    "NotConfigured": "lattice.errors",
    "TaskFailed": "lattice.errors",
    "TaskTimeout": "lattice.errors",
    "WorkerLost": "lattice.errors",
    "PythonVersionMismatch": "lattice.errors",
    "ResultTooLarge": "lattice.errors",
    "FunctionNotAllowed": "lattice.errors",
    "RemoteError": "lattice.errors",
    "RemoteTraceback": "lattice.errors",
    "EndpointOffline": "lattice.errors",
    "TaskInfo": "lattice.tasks",
    "TaskResult": "lattice.tasks",
    "ExceptionInfo": "lattice.tasks",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from lattice.client import Client, login
    from lattice.errors import (
        APIError,
        AuthExpired,
        EndpointOffline,
        FunctionNotAllowed,
        LatticeError,
        NotConfigured,
        PythonVersionMismatch,
        RemoteError,
        RemoteTraceback,
        ResultTooLarge,
        TaskFailed,
        TaskTimeout,
        WorkerLost,
    )
    from lattice.executor import Executor, LatticeFuture
    from lattice.functions import ShellFunction, ShellResult, WasmFunction
    from lattice.progress import progress
    from lattice.tasks import ExceptionInfo, TaskInfo, TaskResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lattice' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
