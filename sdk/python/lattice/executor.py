"""``lattice.Executor``: a ``concurrent.futures.Executor`` that runs on a
Lattice endpoint.

How it works: ``submit`` serializes the function (once per function; it
is registered on first use) and the arguments in the caller's thread, so
mistakes raise at once, and queues the call. One background thread runs an
asyncio loop that sends queued calls in batches (one ``submit`` per function
for everything submitted while the previous one was in flight, at most
``batch_size`` tasks each) over the executor's one session stream
(``GET /v1/stream``, a WebSocket), which also carries the results of every
batch, several per frame. Futures resolve as results land; nothing polls.
If the stream drops, the executor reconnects and follows its unfinished
batches again.

Every batch is also written to ``CONFIG_DIR/task_groups/<task_group_id>.jsonl``
so that a new executor with the same ``task_group_id`` (after a kernel
restart) gets the futures back with :meth:`Executor.reload_tasks`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import httpx
import websockets

from lattice import serialize
from lattice.client import Client, error_from
from lattice.errors import APIError, AuthExpired, EndpointOffline, LatticeError, TaskCancelled
from lattice.functions import PythonFunction, ShellFunction, WasmFunction
from lattice.profile import config_dir
from lattice.results import outcome
from lattice.tasks import TaskInfo
from lattice.tls import ssl_context

#: Largest batch the service takes by default.
MAX_BATCH = 10_000

#: The HTTP status each error code of the API goes with.
_STATUS_OF = {"bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404, "conflict": 409,
              "payload_too_large": 413, "unavailable": 503, "internal": 500}


class LatticeFuture(concurrent.futures.Future):
    """A future of one Lattice task. ``task_id`` is set once the task has
    been submitted; ``task`` holds the final :class:`~lattice.TaskInfo`
    once it is done (``fut.task.state``, ``fut.task.worker``,
    ``fut.task.result.stdout``...; also a dict: ``fut.task["state"]``)."""

    def __init__(self, executor: Optional["Executor"] = None) -> None:
        super().__init__()
        self.task_id: Optional[str] = None
        self.batch_id: Optional[str] = None
        self.task: Optional[TaskInfo] = None
        self._executor = executor

    def __repr__(self) -> str:
        return f"<LatticeFuture task_id={self.task_id} state={self._state}>"

    @property
    def stdout(self) -> str:
        """What the call printed (a tail), once done."""
        return ((self.task or {}).get("result") or {}).get("stdout", "")

    @property
    def stderr(self) -> str:
        return ((self.task or {}).get("result") or {}).get("stderr", "")

    def cancel(self) -> bool:
        """Cancels the future and, if it was submitted, the task on the service."""
        cancelled = super().cancel()
        if cancelled and self._executor is not None and self.task_id:
            self._executor._cancel_remote([self.task_id])
        return cancelled


class _Pending:
    __slots__ = ("key", "args", "future")

    def __init__(self, key: Tuple[Any, ...], args: Dict[str, Any], future: LatticeFuture) -> None:
        self.key = key
        self.args = args
        self.future = future


class Executor(concurrent.futures.Executor):
    """Runs functions on a Lattice endpoint; the Globus Compute SDK's
    ``Executor`` shape::

        with Executor(endpoint_id=ep) as ex:
            fut = ex.submit(f, 1)
            print(fut.result())

    Parameters:
        endpoint_id: the endpoint's id (or its name, looked up once).
        client: a :class:`~lattice.Client` [default: ``Client()``].
        task_group_id: group of this executor's tasks, kept so that a later
            executor (after a kernel restart) can :meth:`reload_tasks`
            [default: a new id].
        batch_size: most tasks per request.
        batch_interval: a request is sent once no submission came for this
            many seconds (or the batch is full)...
        max_batch_wait: ...or the oldest queued call waited this long.
        walltime: seconds each task may run [default: the service's].
        max_retries: retries when a worker dies [default: the service's].
        serializer: force ``source``, ``cloudpickle`` or ``dill`` for Python functions.
        user_endpoint_config: a JSON-able dict for multi-user endpoints (the
            per-user config template's variables); sent with every batch,
            not used by the service yet.
        label: a label for this executor, shown in ``repr``.
    """

    def __init__(
        self,
        endpoint_id: Optional[str] = None,
        client: Optional[Client] = None,
        *,
        task_group_id: Optional[str] = None,
        batch_size: int = 1000,
        batch_interval: float = 0.005,
        max_batch_wait: float = 0.1,
        walltime: Optional[int] = None,
        max_retries: Optional[int] = None,
        serializer: Optional[str] = None,
        user_endpoint_config: Optional[Dict[str, Any]] = None,
        label: str = "",
        container_id: Optional[str] = None,
        resource_specification: Optional[Dict[str, Any]] = None,
        **unsupported: Any,
    ) -> None:
        if container_id is not None:
            raise NotImplementedError("container_id is not supported: register a container function instead")
        if resource_specification:
            raise NotImplementedError("resource_specification is not supported yet")
        if unsupported:
            warnings.warn(f"Executor ignores {', '.join(sorted(unsupported))} (Globus Compute options "
                          "without a Lattice equivalent)", stacklevel=2)
        self.client = client or Client()
        self._endpoint_id = endpoint_id
        self.task_group_id = task_group_id or str(uuid.uuid4())
        self.batch_size = max(1, min(int(batch_size), MAX_BATCH))
        self.batch_interval = batch_interval
        self.max_batch_wait = max(batch_interval, max_batch_wait)
        self.walltime = walltime
        self.max_retries = max_retries
        self.serializer = serializer
        self.user_endpoint_config = user_endpoint_config
        self.label = label

        self._lock = threading.Lock()
        self._queue: Deque[_Pending] = collections.deque()
        self._wakeup_pending = False
        self._functions: Dict[Any, str] = {}        # callable / payload -> function id
        self._handlers: Dict[str, Any] = {}         # function id -> ShellFunction | WasmFunction | None
        self._futures: Dict[str, LatticeFuture] = {}   # task id -> future, until resolved
        self._live: set = set()                         # futures not done yet
        self._outstanding = 0
        self._checked_endpoints: set = set()
        self._shutdown = False
        self._idle = threading.Condition(self._lock)

        #: Counters: batch requests sent, tasks submitted, result streams opened.
        self.stats = {"batch_requests": 0, "tasks_submitted": 0, "streams_opened": 0}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name=f"lattice-executor-{self.task_group_id[:8]}",
                                        daemon=True)
        self._thread.start()
        self._ready.wait()

    # ------------------------------------------------------------ public API

    def __repr__(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return f"<lattice.Executor{label} endpoint={self._endpoint_id} task_group_id={self.task_group_id}>"

    @property
    def endpoint_id(self) -> Optional[str]:
        return self._endpoint_id

    @endpoint_id.setter
    def endpoint_id(self, value: Optional[str]) -> None:
        self._endpoint_id = value

    def register_function(self, fn: Any, **kwargs: Any) -> str:
        """Registers a function (once per executor) and returns its id."""
        return self._function_id(fn)[0]

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> LatticeFuture:
        """Runs ``fn(*args, **kwargs)`` on the endpoint. ``fn`` is a Python
        callable, a :class:`~lattice.ShellFunction` or a
        :class:`~lattice.WasmFunction`."""
        function_id, handler = self._function_id(fn)
        if handler is None:
            task_args = PythonFunction.arguments(args, kwargs)
        else:
            task_args = handler.arguments(args, kwargs)
        return self._enqueue(function_id, handler, task_args)

    def submit_to_registered_function(self, function_id: str, args: Iterable[Any] = (),
                                      kwargs: Optional[Dict[str, Any]] = None) -> LatticeFuture:
        """Runs an already registered function by id."""
        handler = self._handler_of(function_id)
        args, kwargs = tuple(args), dict(kwargs or {})
        task_args = PythonFunction.arguments(args, kwargs) if handler is None else handler.arguments(args, kwargs)
        return self._enqueue(function_id, handler, task_args)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        """Like ``concurrent.futures.Executor.map``: all calls are submitted
        at once (in few batches); results come back in order."""
        return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stops taking submissions. ``cancel_futures`` cancels every call
        not finished yet (on the service too); ``wait`` blocks until every
        future is done. Without ``wait``, results still arrive in the
        background."""
        with self._lock:
            if self._shutdown and not cancel_futures and not wait:
                return
            self._shutdown = True
        if cancel_futures:
            with self._lock:
                self._queue.clear()
                live = list(self._live)
            for future in live:
                if future.task_id is None:
                    # Not sent yet, or in flight: the sender cancels it on
                    # the service once it has an id.
                    concurrent.futures.Future.cancel(future)
                else:
                    future.cancel()
        else:
            self._wake()
        if wait:
            with self._lock:
                while self._outstanding > 0:
                    self._idle.wait(0.5)
            self._stop_loop()
        else:
            threading.Thread(target=self._stop_when_idle, daemon=True).start()

    def reload_tasks(self, task_group_id: Optional[str] = None) -> List[LatticeFuture]:
        """Futures of every task submitted under ``task_group_id`` (default:
        this executor's) by any executor on this machine, e.g. before a
        kernel restart. Finished ones resolve at once; the others as they
        finish."""
        group = task_group_id or self.task_group_id
        path = _group_path(group)
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise LookupError(f"no tasks were recorded for task group {group} (looked in {path})") from None
        batches = []
        futures: List[LatticeFuture] = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            handler = _handler_from_record(record)
            function_id = record["function_id"]
            with self._lock:
                self._handlers.setdefault(function_id, handler)
                for task_id in record["task_ids"]:
                    future = self._futures.get(task_id)
                    if future is None:
                        future = LatticeFuture(self)
                        future.task_id, future.batch_id = task_id, record["batch_id"]
                        future._lattice_handler = handler  # type: ignore[attr-defined]
                        self._futures[task_id] = future
                        self._live.add(future)
                        self._outstanding += 1
                        future.add_done_callback(self._on_future_done)
                    futures.append(future)
            batches.append(record["batch_id"])
        for batch_id in dict.fromkeys(batches):
            self._call_in_loop(lambda b=batch_id: self._follow(b))
        return futures

    # ------------------------------------------------------------ submission

    def _resolve_endpoint(self) -> str:
        if not self._endpoint_id:
            raise ValueError("no endpoint: Executor(endpoint_id=...) or executor.endpoint_id = ...")
        endpoint = self._endpoint_id
        if endpoint not in self._checked_endpoints:
            try:
                uuid.UUID(endpoint)
            except ValueError:
                endpoint = self.client.endpoint_id(endpoint)
                self._endpoint_id = endpoint
            info = self.client.get_endpoint(endpoint)
            if info.get("status") != "online":
                warnings.warn(EndpointOffline(
                    f"endpoint {info.get('name')} ({endpoint}) is offline: tasks are queued and will run "
                    "when its agent reconnects"), stacklevel=4)
            self._checked_endpoints.add(endpoint)
        return endpoint

    def _function_id(self, fn: Any) -> Tuple[str, Any]:
        with self._lock:
            known = self._functions.get(fn) if _hashable(fn) else None
            if known is None and _same_code_key(fn) is not None:
                # The same lambda written in a loop is a new object each time.
                known = self._functions.get(_same_code_key(fn))
        if known is not None:
            return known, self._handlers.get(known)
        if isinstance(fn, (ShellFunction, WasmFunction)):
            handler: Any = fn
            spec, name = fn.spec(), fn.name
        else:
            serialized = serialize.serialize_function(fn, self.serializer)
            handler = None
            spec, name = serialized.spec(), serialized.entry_point
            with self._lock:
                known = self._functions.get(serialized.payload)
            if known is not None:
                with self._lock:
                    self._functions[fn] = known
                return known, None
        body: Dict[str, Any] = {"spec": spec}
        if name:
            body["name"] = name
        function_id = self.client.request("POST", "/v1/functions", json=body)["id"]
        with self._lock:
            if _hashable(fn):
                self._functions[fn] = function_id
            if _same_code_key(fn) is not None:
                self._functions[_same_code_key(fn)] = function_id
            if handler is None:
                self._functions[spec["payload"]] = function_id
            self._handlers[function_id] = handler
        return function_id, handler

    def _handler_of(self, function_id: str) -> Any:
        with self._lock:
            if function_id in self._handlers:
                return self._handlers[function_id]
        info = self.client.get_function(function_id)
        spec = info["spec"]
        handler: Any = None
        if spec["kind"] == "shell":
            handler = ShellFunction(spec["command"], name=info["name"])
        elif spec["kind"] == "wasm":
            handler = WasmFunction(__import__("base64").b64decode(spec["module"]), name=info["name"])
        elif spec["kind"] == "container":
            handler = ShellFunction(spec["command"], name=info["name"])
            handler.kind = "container"
        with self._lock:
            self._handlers[function_id] = handler
        return handler

    def _enqueue(self, function_id: str, handler: Any, task_args: Dict[str, Any]) -> LatticeFuture:
        endpoint = self._resolve_endpoint()
        walltime = getattr(handler, "walltime", None) or self.walltime
        key = (function_id, endpoint, walltime, self.max_retries)
        future = LatticeFuture(self)
        future._lattice_handler = handler  # type: ignore[attr-defined]
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an Executor after shutdown")
            self._queue.append(_Pending(key, task_args, future))
            self._live.add(future)
            self._outstanding += 1
            wake = not self._wakeup_pending
            self._wakeup_pending = True
        future.add_done_callback(self._on_future_done)
        if wake:
            self._call_in_loop(self._schedule_flush)
        return future

    def _wake(self) -> None:
        with self._lock:
            if self._wakeup_pending or not self._queue:
                return
            self._wakeup_pending = True
        self._call_in_loop(self._schedule_flush)

    def _on_future_done(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._live.discard(future)
            self._outstanding -= 1
            if self._outstanding <= 0:
                self._idle.notify_all()

    # ------------------------------------------------------------ background loop

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._http = httpx.AsyncClient(base_url=self.client.url, timeout=120.0)
        self._flushing = False
        self._last_send = 0.0
        self._socket: Any = None
        self._connect_lock = asyncio.Lock()
        self._request_ids = 0
        # request id -> (answer, its calls, the connection it was sent on)
        self._requests: Dict[int, Tuple[asyncio.Future, List[_Pending], Any]] = {}
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            try:
                if self._socket is not None:
                    self._loop.run_until_complete(self._socket.close())
                self._loop.run_until_complete(self._http.aclose())
                pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                self._loop.close()

    def _call_in_loop(self, callback: Callable[[], Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:
            pass  # the loop is closed: the executor is gone

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._call_in_loop(self._loop.stop)
            self._thread.join(timeout=30)

    def _stop_when_idle(self) -> None:
        with self._lock:
            while self._outstanding > 0:
                self._idle.wait(0.5)
        self._stop_loop()

    def _schedule_flush(self) -> None:
        if not self._flushing:
            self._flushing = True
            self._loop.create_task(self._flush())

    async def _flush(self) -> None:
        """Sends everything queued; while a request is in flight, new
        submissions gather for the next one."""
        try:
            while True:
                # Gather while submissions keep coming: send when a batch is
                # full, when none came for `batch_interval`, or after
                # `max_batch_wait`.
                waited, last = 0.0, -1
                if time.monotonic() - self._last_send > 2 * self.batch_interval and len(self._queue) == 1:
                    waited = self.max_batch_wait  # a lone call after a quiet spell goes at once
                while True:
                    queued = len(self._queue)
                    if queued >= self.batch_size or queued == last or waited >= self.max_batch_wait:
                        break
                    last = queued
                    await asyncio.sleep(self.batch_interval)
                    waited += self.batch_interval
                with self._lock:
                    items = list(self._queue)
                    self._queue.clear()
                    self._wakeup_pending = False
                if not items:
                    return
                groups: Dict[Tuple[Any, ...], List[_Pending]] = collections.OrderedDict()
                for item in items:
                    if not item.future.cancelled():
                        groups.setdefault(item.key, []).append(item)
                sends = []
                for key, group in groups.items():
                    for start in range(0, len(group), self.batch_size):
                        sends.append(self._send(key, group[start:start + self.batch_size]))
                self._last_send = time.monotonic()
                await asyncio.gather(*sends)
                self._last_send = time.monotonic()
        finally:
            self._flushing = False
            with self._lock:
                more = bool(self._queue)
            if more:
                self._schedule_flush()

    async def _send(self, key: Tuple[Any, ...], items: List[_Pending]) -> None:
        function_id, endpoint, walltime, max_retries = key
        body: Dict[str, Any] = {"function_id": function_id, "endpoint_id": endpoint,
                                "tasks": [item.args for item in items]}
        if walltime is not None:
            body["walltime_secs"] = int(walltime)
        if max_retries is not None:
            body["max_retries"] = int(max_retries)
        if self.user_endpoint_config is not None:
            body["user_endpoint_config"] = self.user_endpoint_config
        self._request_ids += 1
        request_id = self._request_ids
        waiter: asyncio.Future = self._loop.create_future()
        message = json.dumps({"type": "submit", "request_id": request_id, "batch": body})
        try:
            for attempt in (1, 2):
                socket = await self._session()
                self._requests[request_id] = (waiter, items, socket)
                try:
                    await socket.send(message)
                    break
                except websockets.ConnectionClosed:
                    # Not sent: the connection had closed under us. Once more on a new one.
                    self._requests.pop(request_id, None)
                    if self._socket is socket:
                        self._socket = None
                    if attempt == 2:
                        raise
            await waiter
        except Exception as e:  # noqa: BLE001 - every future of the batch learns why
            self._requests.pop(request_id, None)
            error = e if isinstance(e, LatticeError) else APIError(0, "unreachable", f"submitting tasks failed: {e}")
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)

    def _on_submitted(self, event: Dict[str, Any]) -> None:
        """Binds a batch's futures to their task ids; runs in the reader, so
        that the batch's results, which may follow in the next frame, find them."""
        request = self._requests.pop(event.get("request_id"), None)
        if request is None:
            return
        waiter, items, _socket = request
        batch_id, task_ids = event["batch_id"], event["task_ids"]
        cancelled = []
        with self._lock:
            for item, task_id in zip(items, task_ids):
                item.future.task_id, item.future.batch_id = task_id, batch_id
                self._futures[task_id] = item.future
                if item.future.cancelled():
                    cancelled.append(task_id)
        handler = items[0].future._lattice_handler  # type: ignore[attr-defined]
        self._record(batch_id, items[0].key[0], handler, task_ids)
        # Counted once recorded: a kernel that dies after seeing the count
        # can be re-attached to these tasks (reload_tasks).
        self.stats["batch_requests"] += 1
        self.stats["tasks_submitted"] += len(items)
        if cancelled:
            self._cancel_remote(cancelled)
        if not waiter.done():
            waiter.set_result(None)

    def _auth(self) -> Dict[str, str]:
        return {"authorization": f"Bearer {self.client.token}"} if self.client.token else {}

    # ------------------------------------------------------------ session stream

    async def _session(self) -> Any:
        """The executor's one session stream (``GET /v1/stream``): it carries
        the submissions and every result. Opened on first use and again
        after a drop, following again every batch with unresolved futures."""
        if self._socket is not None:
            return self._socket
        async with self._connect_lock:
            if self._socket is not None:
                return self._socket
            self.stats["streams_opened"] += 1
            try:
                url = self.client.session_url()
                socket = await websockets.connect(url, additional_headers=self._auth(),
                                                  max_size=None, open_timeout=60, ping_interval=20,
                                                  ping_timeout=60, compression=None,
                                                  ssl=ssl_context() if url.startswith("wss:") else None)
            except Exception as e:  # noqa: BLE001 - name what refused us
                status = getattr(getattr(e, "response", None), "status_code", None)
                if status == 401:
                    raise AuthExpired(401, "unauthorized", "the service refused the token: run `lattice login` "
                                      "again (or refresh LATTICE_TOKEN)") from e
                if status is not None:
                    raise APIError(status, "refused", f"the session stream was refused (HTTP {status})") from e
                raise
            for batch_id in self._pending_batches():
                await socket.send(json.dumps({"type": "subscribe", "batch_id": batch_id}))
            self._socket = socket
            self._loop.create_task(self._read(socket))
            return socket

    async def _read(self, socket: Any) -> None:
        close_code = None
        try:
            async for message in socket:
                event = json.loads(message)
                kind = event.get("type")
                if kind == "tasks":
                    for task in event["tasks"]:
                        self._resolve(task)
                elif kind == "submitted":
                    self._on_submitted(event)
                elif kind == "error":
                    self._on_error(event)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the stream broke: reconnect below
            close_code = getattr(getattr(e, "rcvd", None), "code", None)
        if self._socket is socket:
            self._socket = None
        # Requests sent on this connection lost their answer with it.
        lost = [rid for rid, (_w, _i, on) in self._requests.items() if on is socket]
        for waiter, _items, _on in (self._requests.pop(rid) for rid in lost):
            if not waiter.done():
                waiter.set_exception(
                    APIError(413, "payload_too_large", "the batch is larger than the service takes in one "
                             "message; submit fewer or smaller arguments per batch") if close_code == 1009 else
                    APIError(0, "unreachable", "the session stream closed before the service answered; the "
                             "tasks may or may not have been submitted"))
        if self._pending_batches():
            self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = 0.2
        while self._socket is None and self._pending_batches():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (AuthExpired, APIError) as e:
                if isinstance(e, AuthExpired) or e.status in (403, 404):
                    for batch_id in self._pending_batches():
                        self._fail_batch(batch_id, e)
                    return
            except Exception:  # noqa: BLE001 - the service is away: keep trying
                pass

    def _on_error(self, event: Dict[str, Any]) -> None:
        code, message = event.get("code", "internal"), event.get("message", "")
        error = error_from(_STATUS_OF.get(code, 500), code, message)
        request = self._requests.pop(event.get("request_id"), None) if event.get("request_id") is not None else None
        if request is not None:
            waiter = request[0]
            if not waiter.done():
                waiter.set_exception(error)
        elif event.get("batch_id"):
            self._fail_batch(event["batch_id"], error)
        else:
            warnings.warn(f"the session stream reported: {code}: {message}")

    def _follow(self, batch_id: str) -> None:
        """Follows a batch submitted by an earlier executor."""
        async def follow() -> None:
            try:
                socket = await self._session()
                await socket.send(json.dumps({"type": "subscribe", "batch_id": batch_id}))
            except asyncio.CancelledError:
                raise
            except (AuthExpired, APIError) as e:
                self._fail_batch(batch_id, e)
            except Exception:  # noqa: BLE001 - the service is away: follow when it is back
                self._loop.create_task(self._reconnect())
        self._loop.create_task(follow())

    def _pending_batches(self) -> List[str]:
        with self._lock:
            return list(dict.fromkeys(f.batch_id for f in self._futures.values() if f.batch_id and not f.done()))

    def _fail_batch(self, batch_id: str, error: BaseException) -> None:
        with self._lock:
            futures = [f for f in self._futures.values() if f.batch_id == batch_id and not f.done()]
        for future in futures:
            future.set_exception(error)

    def _resolve(self, task: Dict[str, Any]) -> None:
        with self._lock:
            future = self._futures.pop(task["id"], None)
        if future is None or future.done():
            return
        task = TaskInfo(task)
        future.task = task
        if task.get("state") == "cancelled":
            if not concurrent.futures.Future.cancel(future):
                future.set_exception(TaskCancelled(task["id"], "cancelled", task))
            return
        result = outcome(task, getattr(future, "_lattice_handler", None))
        if not future.set_running_or_notify_cancel():
            return
        if result.ok:
            future.set_result(result.value)
        else:
            future.set_exception(result.error)

    def _cancel_remote(self, task_ids: List[str]) -> None:
        async def cancel() -> None:
            for task_id in task_ids:
                try:
                    await self._http.post(f"/v1/tasks/{task_id}/cancel", json={}, headers=self._auth())
                except Exception:  # noqa: BLE001 - best effort
                    pass
        self._call_in_loop(lambda: self._loop.create_task(cancel()))

    # ------------------------------------------------------------ task groups

    def _record(self, batch_id: str, function_id: str, handler: Any, task_ids: List[str]) -> None:
        record: Dict[str, Any] = {"batch_id": batch_id, "function_id": function_id, "task_ids": task_ids,
                                  "submitted_at": time.time(), "kind": getattr(handler, "kind", "python")}
        if isinstance(handler, ShellFunction):
            record["cmd"] = handler.cmd
            record["snippet_lines"] = handler.snippet_lines
        elif isinstance(handler, WasmFunction):
            record["name"] = handler.name
        try:
            path = _group_path(self.task_group_id)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            warnings.warn(f"cannot record task group {self.task_group_id}: {e}; reload_tasks() will miss it")


def _group_path(task_group_id: str) -> Path:
    safe = "".join(c for c in task_group_id if c.isalnum() or c in "-_.")
    if not safe:
        raise ValueError(f"invalid task_group_id {task_group_id!r}")
    return config_dir() / "task_groups" / f"{safe}.jsonl"


def _handler_from_record(record: Dict[str, Any]) -> Any:
    kind = record.get("kind", "python")
    if kind in ("shell", "container"):
        handler = ShellFunction(record.get("cmd", ""), snippet_lines=record.get("snippet_lines", 1000))
        handler.kind = kind
        return handler
    if kind == "wasm":
        handler = WasmFunction.__new__(WasmFunction)
        handler.name = handler.cmd = record.get("name", "wasm")
        handler.walltime = None
        return handler
    return None


def _same_code_key(fn: Any) -> Optional[Tuple[Any, ...]]:
    """Functions with this key are the same function: same code and globals,
    no closure, no defaults."""
    code = getattr(fn, "__code__", None)
    if code is None or getattr(fn, "__closure__", None) or getattr(fn, "__defaults__", None) \
            or getattr(fn, "__kwdefaults__", None):
        return None
    return ("code", code, id(fn.__globals__))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
        return True
    except TypeError:
        return False
