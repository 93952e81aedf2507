"""The worker's pipe protocol, driven directly (no Rust, no service)."""

from __future__ import annotations

import base64
import pickle
import struct
import subprocess
import sys

import msgpack
import pytest

from lattice import serialize


class Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "lattice.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.hello = self.read()

    def read(self):
        header = self.process.stdout.read(4)
        (size,) = struct.unpack(">I", header)
        return msgpack.unpackb(self.process.stdout.read(size), raw=False)

    def call(self, fn=None, args=(), kwargs=None, function_id="f", send_payload=True, **extra):
        request = {"id": 1, "function_id": function_id, "task_id": "t", "max_result_bytes": 10_000_000}
        if fn is not None and send_payload:
            s = serialize.serialize_function(fn)
            request.update(payload=s.payload, serializer=s.serializer, entry_point=s.entry_point)
        request["args"] = serialize.serialize_args(args, kwargs or {})
        request.update(extra)
        body = msgpack.packb(request, use_bin_type=True)
        self.process.stdin.write(struct.pack(">I", len(body)) + body)
        self.process.stdin.flush()
        return self.read()

    def close(self):
        self.process.stdin.close()
        assert self.process.wait(timeout=10) == 0


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.close()


def noisy(x):
    import os
    import sys

    print("to stdout", x)
    print("to stderr", file=sys.stderr)
    os.write(1, b"raw fd 1 write\n")  # must not corrupt the protocol
    return x + 1


def test_hello_names_the_interpreter(worker):
    assert worker.hello["type"] == "hello"
    assert worker.hello["python_version"] == serialize.python_version()
    assert worker.hello["executable"] == sys.executable


def test_output_is_captured_and_fd_writes_do_not_break_the_protocol(worker):
    response = worker.call(noisy, (1,))
    assert response["status"] == "ok"
    assert pickle.loads(base64.b64decode(response["value"])) == 2
    assert response["stdout"] == "to stdout 1\n"
    assert response["stderr"] == "to stderr\n"
    # The function is cached by id: no payload the second time.
    again = worker.call(noisy, (5,), send_payload=False)
    assert pickle.loads(base64.b64decode(again["value"])) == 6


def test_an_unknown_function_without_payload_is_asked_for(worker):
    assert worker.call(None, function_id="never-sent")["status"] == "need_function"


def test_exceptions_carry_type_message_traceback_and_pickle(worker):
    def fail(x):
        raise KeyError(x)

    response = worker.call(fail, ("k",))
    assert response["status"] == "exception"
    exc = response["exception"]
    assert exc["type_name"] == "KeyError"
    assert exc["message"] == "'k'"
    assert "in fail" in exc["traceback"]
    assert "lattice/worker.py" not in exc["traceback"]
    assert isinstance(pickle.loads(base64.b64decode(exc["payload"])), KeyError)


def test_sys_exit_and_input_do_not_stop_the_worker(worker):
    def leave():
        import sys

        sys.exit(4)

    assert worker.call(leave)["exception"]["type_name"] == "SystemExit"

    def read_stdin():
        return input()

    assert worker.call(read_stdin, function_id="g")["exception"]["type_name"] == "EOFError"
    assert worker.call(noisy, (1,), function_id="h")["status"] == "ok"


def test_bad_payload_is_an_error_answer(worker):
    response = worker.call(None, function_id="x", payload="!!", serializer="cloudpickle", entry_point="f")
    assert response["status"] == "error"
    assert response["error"].startswith("cannot load f (cloudpickle)")
