"""Errors that name the problem, against a real `lattice dev`."""

from __future__ import annotations

import warnings

import httpx
import pytest

import lattice
from lattice import (
    AuthExpired,
    Client,
    EndpointOffline,
    Executor,
    PythonVersionMismatch,
    ResultTooLarge,
    ShellFunction,
    TaskTimeout,
)
from lattice import serialize


def test_python_version_mismatch_is_one_sentence(endpoint, monkeypatch):
    monkeypatch.setattr(serialize, "python_version", lambda: "2.7")
    with Executor(endpoint_id=endpoint, serializer="cloudpickle") as gce:
        with pytest.raises(PythonVersionMismatch) as caught:
            gce.submit(lambda: 1).result(timeout=60)
    here = "%d.%d" % __import__("sys").version_info[:2]
    assert f"this function was serialized by Python 2.7 but this endpoint runs Python {here}" in str(caught.value)
    assert "register the function as source" in str(caught.value)


def one():
    return 1


def test_source_functions_only_warn_on_a_version_mismatch(endpoint, monkeypatch):
    monkeypatch.setattr(serialize, "python_version", lambda: "2.7")
    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(one)
        assert fut.result(timeout=60) == 1
    assert fut.stderr.startswith("lattice: warning: this function was written under Python 2.7")


def test_walltime_is_a_timeout_error(endpoint):
    def slow():
        import time

        time.sleep(30)

    with Executor(endpoint_id=endpoint, walltime=1) as gce:
        with pytest.raises(TaskTimeout, match="timeout: exceeded walltime of 1 s"):
            gce.submit(slow).result(timeout=60)
        # The endpoint carries on.
        assert gce.submit(lambda: "next").result(timeout=60) == "next"


def test_a_shell_walltime_raises_too(endpoint):
    with Executor(endpoint_id=endpoint) as gce:
        with pytest.raises(TaskTimeout):
            gce.submit(ShellFunction("sleep 30", walltime=1)).result(timeout=60)


def test_result_too_large(endpoint):
    with Executor(endpoint_id=endpoint) as gce:
        with pytest.raises(ResultTooLarge, match="result too large"):
            gce.submit(lambda: b"x" * 11_000_000).result(timeout=120)


def test_a_crashing_function_fails_its_task_only(endpoint):
    def die():
        import os

        os._exit(9)

    with Executor(endpoint_id=endpoint, max_retries=0) as gce:
        with pytest.raises(lattice.TaskFailed, match="exited with status 9"):
            gce.submit(die).result(timeout=60)
        assert gce.submit(lambda: 2).result(timeout=60) == 2


def test_expired_or_bad_token_says_how_to_log_in_again(platform):
    client = Client(platform.url, "lat_at_not-a-real-token")
    with pytest.raises(AuthExpired, match="lattice login"):
        client.whoami()
    with pytest.raises(AuthExpired, match=r"lattice\.login\(\)"):
        Executor(endpoint_id=platform.endpoint_id, client=client).submit(lambda: 1)


def test_offline_endpoint_warns_and_keeps_tasks_queued(platform):
    headers = {"authorization": f"Bearer {platform.token}"}
    offline = httpx.post(f"{platform.url}/v1/endpoints", json={"name": "nobody-home"}, headers=headers).json()
    endpoint_id = offline["endpoint"]["id"]
    gce = Executor(endpoint_id=endpoint_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fut = gce.submit(lambda: 1)
    assert any(issubclass(w.category, EndpointOffline) and "is offline: tasks are queued" in str(w.message)
               for w in caught)
    assert not fut.done()
    gce.shutdown(wait=True, cancel_futures=True)
    assert fut.cancelled()


def test_no_configuration_names_the_fixes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("LATTICE_URL", raising=False)
    monkeypatch.delenv("LATTICE_TOKEN", raising=False)
    with pytest.raises(lattice.NotConfigured, match="lattice login"):
        Client()
