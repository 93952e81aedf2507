"""The persistent Python worker: ``python3 -m lattice.worker``.

An endpoint's worker (the Rust ``PythonRuntime``) keeps a few of these
interpreters alive and sends them one call at a time over pipes. Every
message is a 4-byte big-endian length followed by a MessagePack map.

At start the worker moves the protocol to private copies of fds 0 and 1,
points fd 0 at ``/dev/null`` and fd 1 at fd 2, so that nothing the user's
code prints, at the Python or at the C level, can corrupt the protocol.

worker -> runtime, once: ``{"type": "hello", "python_version": "3.11",
"version": "3.11.7", "executable": ..., "pid": ...}``

runtime -> worker, per call::

    {"id": int, "task_id": str, "function_id": str,
     "payload": str | None,        # base64 function payload; None if sent before
     "serializer": str, "entry_point": str | None,
     "args": str | None,           # base64 (args, kwargs) pickle, see serialize.py
     "max_result_bytes": int, "output_tail_bytes": int}

worker -> runtime, per call (``status`` decides the other keys)::

    {"id", "status": "ok", "value": str (base64), "stdout", "stderr"}
    {"id", "status": "exception", "exception": {"type_name", "message",
        "traceback", "payload": str | None}, "stdout", "stderr"}
    {"id", "status": "error", "error": str, "stdout", "stderr"}
    {"id", "status": "need_function"}   # payload was None and the cache lost it

The worker never exits on a bad request: every failure is an answer. It
exits when its input closes.
"""

from __future__ import annotations

import base64
import collections
import io
import os
import struct
import sys
import traceback
from typing import Any, Callable, Dict, Optional

import msgpack

from lattice import serialize

#: Functions kept deserialized, by function id (most recently used last).
FUNCTION_CACHE_SIZE = 256

_HEADER = struct.Struct(">I")


class _Channel:
    """Length-prefixed MessagePack over two raw fds."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.buffer = bytearray()

    def _read_exact(self, n: int) -> Optional[bytes]:
        while len(self.buffer) < n:
            chunk = os.read(self.read_fd, max(65536, n - len(self.buffer)))
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read(self) -> Optional[Dict[str, Any]]:
        header = self._read_exact(4)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        body = self._read_exact(size)
        if body is None:
            return None
        return msgpack.unpackb(body, raw=False)

    def write(self, message: Dict[str, Any]) -> None:
        body = msgpack.packb(message, use_bin_type=True)
        data = memoryview(_HEADER.pack(len(body)) + body)
        while data:
            written = os.write(self.write_fd, data)
            data = data[written:]


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[-limit:]


def _qualified_name(kind: type) -> str:
    module = getattr(kind, "__module__", None)
    name = getattr(kind, "__qualname__", kind.__name__)
    if module in (None, "builtins", "__builtin__"):
        return name
    return f"{module}.{name}"


def _remote_traceback(error: BaseException) -> str:
    # Drop the worker's own frames: the traceback starts in the user's code.
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def describe_exception(error: BaseException) -> Dict[str, Any]:
    """The ``exception`` object of a response (and of ``TaskResult``)."""
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the error
        message = f"<unprintable {type(error).__name__}>"
    payload = None
    try:
        data = serialize.serialize_value(error)
        # Only ship what the other side can load again.
        serialize.pickle.loads(data)
        payload = base64.b64encode(data).decode("ascii")
    except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text only
        payload = None
    return {
        "type_name": _qualified_name(type(error)),
        "message": message,
        "traceback": _remote_traceback(error),
        "payload": payload,
    }


class Worker:
    """Runs calls; holds the function cache."""

    def __init__(self) -> None:
        self.functions: "collections.OrderedDict[str, Callable[..., Any]]" = collections.OrderedDict()

    def _function(self, request: Dict[str, Any]) -> Optional[Callable[..., Any]]:
        function_id = request.get("function_id") or ""
        fn = self.functions.get(function_id)
        if fn is not None:
            self.functions.move_to_end(function_id)
            return fn
        payload = request.get("payload")
        if payload is None:
            return None
        fn = serialize.deserialize_function(payload, request.get("serializer") or "", request.get("entry_point"))
        self.functions[function_id] = fn
        if len(self.functions) > FUNCTION_CACHE_SIZE:
            self.functions.popitem(last=False)
        return fn

    def call(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    def handle(self, request: Dict[str, Any]) -> Dict[str, Any]:
        rid = request.get("id")
        tail = int(request.get("output_tail_bytes") or 65536)
        name = request.get("entry_point") or "the function"
        try:
            fn = self._function(request)
        except BaseException as e:  # noqa: BLE001 - reported to the task
            return {"id": rid, "status": "error", "stdout": "", "stderr": "",
                    "error": f"cannot load {name} ({request.get('serializer')}): {type(e).__name__}: {e}"}
        if fn is None:
            return {"id": rid, "status": "need_function"}
        try:
            args, kwargs = serialize.deserialize_args(request.get("args"))
        except BaseException as e:  # noqa: BLE001
            return {"id": rid, "status": "error", "stdout": "", "stderr": "",
                    "error": f"cannot deserialize the arguments of {name}: {type(e).__name__}: {e}"}

        out, err = io.StringIO(), io.StringIO()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        task_id = request.get("task_id")
        if task_id:
            os.environ["LATTICE_TASK_ID"] = task_id
        try:
            value = self.call(fn, args, kwargs)
        except BaseException as e:  # noqa: BLE001 - SystemExit too: the worker carries on
            sys.stdout, sys.stderr = saved
            return {"id": rid, "status": "exception", "exception": describe_exception(e),
                    "stdout": _tail(out.getvalue(), tail), "stderr": _tail(err.getvalue(), tail)}
        finally:
            sys.stdout, sys.stderr = saved
        stdout, stderr = _tail(out.getvalue(), tail), _tail(err.getvalue(), tail)
        try:
            data = serialize.serialize_value(value)
        except BaseException as e:  # noqa: BLE001
            return {"id": rid, "status": "error", "stdout": stdout, "stderr": stderr,
                    "error": f"cannot serialize the return value of {name} "
                             f"({type(value).__name__}): {type(e).__name__}: {e}"}
        limit = int(request.get("max_result_bytes") or 0)
        if limit and len(data) > limit:
            return {"id": rid, "status": "error", "stdout": stdout, "stderr": stderr,
                    "error": f"result too large: the return value of {name} pickles to {len(data)} bytes, "
                             f"over the limit of {limit} bytes; write large results to a file instead"}
        return {"id": rid, "status": "ok", "value": base64.b64encode(data).decode("ascii"),
                "stdout": stdout, "stderr": stderr}


def _private_channel() -> _Channel:
    read_fd = os.dup(0)
    write_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
    return _Channel(read_fd, write_fd)


def main() -> int:
    channel = _private_channel()
    channel.write({
        "type": "hello",
        "python_version": serialize.python_version(),
        "version": sys.version.split()[0],
        "executable": sys.executable,
        "pid": os.getpid(),
    })
    worker = Worker()
    while True:
        request = channel.read()
        if request is None:
            return 0
        channel.write(worker.handle(request))


if __name__ == "__main__":
    sys.exit(main())
