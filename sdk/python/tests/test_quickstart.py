"""The Globus Compute SDK's quickstart patterns, unchanged but for the
import, against a real `lattice dev`."""

from __future__ import annotations

import json
import threading

import pytest

from lattice import Executor, RemoteError, ShellFunction, ShellResult


def hello_world():
    return "Hello World!"


def double(x):
    return x * 2


def test_submit_and_result(endpoint):
    # from globus_compute_sdk import Executor  ->  from lattice import Executor
    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(hello_world)
        assert fut.result(timeout=60) == "Hello World!"
        fut = gce.submit(double, 21)
        assert fut.result(timeout=60) == 42
        assert fut.task_id and fut.task["state"] == "success"


def test_lambdas_closures_and_kwargs(endpoint):
    offset = 100

    def shifted(x, *, by=1):
        return x + by + offset

    with Executor(endpoint_id=endpoint) as gce:
        assert gce.submit(lambda a, b: a * b, 6, 7).result(timeout=60) == 42
        assert gce.submit(shifted, 1, by=2).result(timeout=60) == 103
        # Rich arguments and results travel pickled.
        data = {"nested": [1, 2.5, None, ("t",)], "bytes": b"\x00\xff"}
        assert gce.submit(lambda d: d, data).result(timeout=60) == data


def test_map_returns_results_in_order(endpoint):
    with Executor(endpoint_id=endpoint) as gce:
        assert list(gce.map(double, range(50))) == [2 * i for i in range(50)]
        assert list(gce.map(lambda a, b: a - b, [5, 6], [1, 2])) == [4, 4]


def test_shell_function_quickstart(endpoint):
    bf = ShellFunction('echo "{message}"')
    with Executor(endpoint_id=endpoint) as gce:
        future = gce.submit(bf, message="hello world")
        result = future.result(timeout=60)
    assert isinstance(result, ShellResult)
    assert result.stdout == "hello world\n"
    assert result.returncode == 0
    assert str(result) == "hello world\n"


def test_shell_function_nonzero_exit_is_a_result(endpoint):
    bf = ShellFunction("echo out; echo err >&2; exit {code}")
    with Executor(endpoint_id=endpoint) as gce:
        result = gce.submit(bf, code=3).result(timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")


def test_printed_output_is_kept_with_the_future(endpoint):
    def chatty(x):
        print("working on", x)
        return x

    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(chatty, 5)
        assert fut.result(timeout=60) == 5
    assert fut.stdout == "working on 5\n"


def test_remote_exceptions_are_raised_as_their_own_type(endpoint):
    def fail(x):
        raise ValueError(f"bad value {x}")

    def bad_json():
        import json

        return json.loads("{")

    with Executor(endpoint_id=endpoint) as gce:
        with pytest.raises(ValueError, match="bad value 7") as caught:
            gce.submit(fail, 7).result(timeout=60)
        cause = caught.value.__cause__
        assert "in fail" in cause.traceback
        assert "Remote traceback" in str(cause)
        with pytest.raises(json.JSONDecodeError):
            gce.submit(bad_json).result(timeout=60)


def test_an_exception_that_does_not_pickle_becomes_remote_error(endpoint):
    def locked():
        import threading

        class Stuck(Exception):
            pass

        error = Stuck("holding a lock")
        error.lock = threading.Lock()
        raise error

    with Executor(endpoint_id=endpoint) as gce:
        with pytest.raises(RemoteError) as caught:
            gce.submit(locked).result(timeout=60)
    assert caught.value.type_name.endswith("Stuck")
    assert caught.value.remote_message == "holding a lock"
    assert "in locked" in caught.value.remote_traceback


def test_futures_resolve_from_callbacks_and_threads(endpoint):
    done = threading.Event()
    seen = []
    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(double, 4)
        fut.add_done_callback(lambda f: (seen.append(f.result()), done.set()))
        assert done.wait(60)
    assert seen == [8]


SCALE = 3


def scaled(x):
    return x * SCALE


def test_functions_of_the_users_own_module_travel_by_value(endpoint):
    # This module is not importable on the endpoint: its code goes along.
    with Executor(endpoint_id=endpoint) as gce:
        assert gce.submit(scaled, 5).result(timeout=60) == 15
