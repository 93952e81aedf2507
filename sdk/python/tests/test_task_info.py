"""``fut.task`` is the documented ``TaskInfo``: attributes and dict access
both work, against a real `lattice dev`."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

import lattice
from lattice import Client, Executor, TaskInfo, TaskResult


def chatty(x):
    print("working on", x)
    return x + 1


def test_fut_task_has_attributes_and_stays_a_dict(endpoint):
    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(chatty, 1)
        assert fut.result(timeout=60) == 2
    task = fut.task
    assert isinstance(task, TaskInfo) and isinstance(task, dict)
    # Attributes...
    assert task.id == fut.task_id
    assert task.state == "success"
    assert task.endpoint_id == endpoint
    assert task.batch_id == fut.batch_id
    assert task.error is None
    assert task.worker and task.finished_at and task.attempts >= 1
    assert isinstance(task.result, TaskResult)
    assert task.result.stdout == "working on 1\n" == fut.stdout
    assert task.result.exception is None  # documented, absent: None
    with pytest.raises(AttributeError, match="no attribute 'stat'"):
        task.stat
    # ...and everything a dict did before.
    assert task["state"] == "success" and task["id"] == fut.task_id
    assert task.get("state") == "success" and task.get("nope", 3) == 3
    assert "state" in task and "nope" not in task
    assert {"id", "state", "result", "worker"} <= set(task)
    assert task["result"]["stdout"] == "working on 1\n"
    assert json.loads(json.dumps(task)) == dict(task)
    assert pickle.loads(pickle.dumps(task)) == task
    assert copy.deepcopy(task).result.stdout == task.result.stdout
    assert repr(task).startswith("TaskInfo({")


def test_failed_and_reloaded_tasks_are_task_infos_too(endpoint):
    def fail():
        raise ValueError("no")

    with Executor(endpoint_id=endpoint) as gce:
        fut = gce.submit(fail)
        with pytest.raises(ValueError):
            fut.result(timeout=60)
        group = gce.task_group_id
    assert fut.task.state == "failed"
    assert fut.task.error == "ValueError: no"
    assert fut.task.result.exception.type_name == "ValueError"
    assert "in fail" in fut.task.result.exception.traceback
    assert fut.task["result"]["exception"]["message"] == "no"

    with Executor(endpoint_id=endpoint, task_group_id=group) as again:
        (reloaded,) = again.reload_tasks()
        with pytest.raises(ValueError):
            reloaded.result(timeout=60)
    assert isinstance(reloaded.task, TaskInfo)
    assert reloaded.task.id == fut.task.id and reloaded.task.state == "failed"

    client = Client()
    assert client.get_task(fut.task_id).result.exception.message == "no"
    assert [t.state for t in client.get_tasks([fut.task_id])] == ["failed"]


def test_task_info_is_exported():
    assert lattice.TaskInfo is TaskInfo
    assert "TaskInfo" in lattice.__all__ and "TaskInfo" in dir(lattice)
    task = TaskInfo({"id": "t", "state": "waiting", "future_field": 1})
    assert task.future_field == 1  # keys a newer service adds read as attributes too
    assert task.result is None
    assert dict.__repr__(task) == repr(dict(task))
