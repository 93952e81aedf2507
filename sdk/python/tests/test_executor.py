"""Executor mechanics: batching, shutdown, task groups (kernel restart),
progress; and login() against a stand-in service."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import lattice
from lattice import Executor


def test_many_submissions_travel_in_few_requests(endpoint):
    with Executor(endpoint_id=endpoint, batch_interval=0.2) as gce:
        futures = [gce.submit(lambda x: x + 1, i) for i in range(500)]
        assert [f.result(timeout=120) for f in futures] == list(range(1, 501))
    # 500 calls submitted in a burst: a handful of batches, all on the
    # executor's one session stream, and no polling.
    assert gce.stats["tasks_submitted"] == 500
    assert gce.stats["batch_requests"] <= 10
    assert gce.stats["streams_opened"] == 1


def test_one_connection_carries_every_batch_and_survives_a_drop(endpoint):
    with Executor(endpoint_id=endpoint) as gce:
        for i in range(3):  # three batches, one after another
            assert gce.submit(lambda x: x * 2, i).result(timeout=60) == i * 2
        assert (gce.stats["batch_requests"], gce.stats["streams_opened"]) == (3, 1)
        # A task in flight when the connection drops still resolves: the
        # executor reconnects and follows its batch again.
        slow = gce.submit(lambda: (__import__("time").sleep(1.0), "slept")[1])
        while slow.task_id is None:
            __import__("time").sleep(0.01)
        closed = threading.Event()

        def drop() -> None:
            async def close() -> None:
                await gce._socket.close()
                closed.set()
            gce._loop.create_task(close())
        gce._call_in_loop(drop)
        assert closed.wait(10)
        assert slow.result(timeout=60) == "slept"
        assert gce.stats["streams_opened"] == 2
        # And new work goes over the new connection.
        assert gce.submit(lambda: 7).result(timeout=60) == 7
        assert gce.stats["streams_opened"] == 2


def test_batch_size_caps_a_request(endpoint):
    with Executor(endpoint_id=endpoint, batch_size=10, batch_interval=0.5) as gce:
        assert list(gce.map(lambda x: x, range(35))) == list(range(35))
    assert gce.stats["batch_requests"] >= 4


def test_shutdown_refuses_new_work_and_can_cancel(endpoint):
    gce = Executor(endpoint_id=endpoint)
    slow = [gce.submit(lambda: __import__("time").sleep(30)) for _ in range(6)]
    gce.shutdown(wait=True, cancel_futures=True)
    assert all(f.cancelled() for f in slow)
    with pytest.raises(RuntimeError, match="after shutdown"):
        gce.submit(lambda: 1)


SUBMITTER = """
import os, sys
from lattice import Executor
ex = Executor(endpoint_id=os.environ["LATTICE_ENDPOINT_ID"])
futs = [ex.submit(lambda x: (__import__("time").sleep(0.5), x * 10)[1], i) for i in range(4)]
while ex.stats["tasks_submitted"] < 4:
    __import__("time").sleep(0.01)
print(ex.task_group_id, flush=True)
os._exit(0)  # the kernel dies with results outstanding
"""


def test_a_new_executor_reattaches_to_a_dead_sessions_tasks(platform):
    out = subprocess.run([sys.executable, "-c", SUBMITTER], env=platform.env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    group = out.stdout.strip()
    with Executor(endpoint_id=platform.endpoint_id, task_group_id=group) as gce:
        futures = gce.reload_tasks()
        assert len(futures) == 4
        assert [f.result(timeout=60) for f in futures] == [0, 10, 20, 30]
    with pytest.raises(LookupError, match="no tasks were recorded"):
        Executor(endpoint_id=platform.endpoint_id).reload_tasks("never-used")


def test_progress_shows_a_bar_and_returns_the_futures(endpoint, capsys):
    with Executor(endpoint_id=endpoint) as gce:
        futures = [gce.submit(lambda x: x, i) for i in range(20)]
        done = lattice.progress(futures, desc="sweep")
    assert done == futures and all(f.done() for f in futures)
    assert "sweep: 100%" in capsys.readouterr().err


def test_client_reads_the_profile_and_env(platform, monkeypatch):
    client = lattice.Client()
    assert client.url == platform.url
    assert client.whoami()["identity"]["username"]
    monkeypatch.setenv("LATTICE_URL", platform.url)
    monkeypatch.setenv("LATTICE_TOKEN", platform.token)
    assert lattice.Client().token == platform.token
    assert lattice.Client().endpoint_id("local") == platform.endpoint_id


class _FakeAuth(BaseHTTPRequestHandler):
    polls = 0

    def log_message(self, *args):
        pass

    def _answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])) or b"{}")
        if self.path == "/v1/auth/login":
            self._answer(200, {"login_id": "l1", "authorize_url": "https://idp.example/authorize?x=1",
                               "device_code": "dc-123", "expires_in": 60, "interval": 1})
        elif self.path == "/v1/auth/token":
            assert body == {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "dc-123"}
            _FakeAuth.polls += 1
            if _FakeAuth.polls < 2:
                self._answer(400, {"code": "authorization_pending", "message": "not yet"})
            else:
                self._answer(200, {"access_token": "lat_at_new", "token_type": "Bearer", "expires_in": 3600,
                                   "refresh_token": "lat_rt_new", "scope": "compute"})
        else:
            self._answer(404, {"code": "not_found", "message": self.path})


def test_login_prints_the_link_polls_and_saves_the_profile(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _FakeAuth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    printed = []
    path = tmp_path / "lattice" / "profile.json"
    try:
        client = lattice.login(url, profile_path=path, output=printed.append)
    finally:
        server.shutdown()
    assert "https://idp.example/authorize?x=1" in printed[0]
    saved = json.loads(path.read_text())
    assert saved["url"] == url and saved["access_token"] == "lat_at_new" and saved["refresh_token"] == "lat_rt_new"
    assert saved["expires_at"].endswith("Z")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert client.token == "lat_at_new"
