"""Lattice's Python Executor side by side with Parsl, Dask and Celery on one
machine: 10,000 no-op tasks, 1,000 tasks of 10 ms of CPU, and single-task
latency on an idle system, 2 workers each.

Run it through bench/python_peers.sh (which makes the venv and the release
build), or directly in a venv with `parsl`, `dask[distributed]`, `celery`
and the Lattice SDK installed:

    python bench/python_peers.py --lattice-bin target/release/lattice \
        [--systems lattice,lattice-pg,parsl,dask,celery] [--noop 10000] [--cpu 1000]

Needs PostgreSQL (127.0.0.1:5432, trust auth, database `test`) for
`lattice-pg` and RabbitMQ (127.0.0.1:5672, guest) for `lattice-pg` and
`celery`. Each system's time runs from the first submission to the last
result; setup and warm-up are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

WORKERS = 2


def burn(ms=10):
    """Spins for `ms` of CPU time."""
    import time

    end = time.process_time() + ms / 1000.0
    while time.process_time() < end:
        pass
    return ms


def noop(x):
    return x


def percentile(samples: List[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Result(dict):
    pass


def measure(name: str, submit: Callable[[Callable[..., Any], Any], Any], gather: Callable[[List[Any]], List[Any]],
            noop_fn: Callable[..., Any], args: argparse.Namespace, one: Callable[[Callable[..., Any], Any], Any],
            after: Optional[Callable[[str, List[Any]], None]] = None) -> Result:
    """The three measurements for one system."""
    result = Result(system=name)
    # Warm-up: workers started, functions registered, connections open.
    assert gather([submit(noop_fn, i) for i in range(20)]) == list(range(20))

    begin = time.perf_counter()
    futures = [submit(noop_fn, i) for i in range(args.noop)]
    submitted = time.perf_counter() - begin
    values = gather(futures)
    total = time.perf_counter() - begin
    assert values == list(range(args.noop)), f"{name}: wrong no-op results"
    result.update(noop_total=total, noop_rate=args.noop / total, noop_submit=submitted)
    if after:
        after("noop", futures)
    print(f"  {name}: {args.noop} no-op tasks in {total:.2f} s ({args.noop / total:.0f}/s; submit loop {submitted:.2f} s)",
          flush=True)

    begin = time.perf_counter()
    futures = [submit(burn, 10) for _ in range(args.cpu)]
    values = gather(futures)
    total = time.perf_counter() - begin
    assert values == [10] * args.cpu
    result.update(cpu_total=total, cpu_rate=args.cpu / total)
    print(f"  {name}: {args.cpu} x 10 ms CPU in {total:.2f} s (ideal {args.cpu * 0.01 / WORKERS:.1f} s)", flush=True)

    time.sleep(0.5)  # idle
    samples = []
    latency_futures = []
    for i in range(args.latency_samples):
        begin = time.perf_counter()
        handle = one(noop_fn, i)
        samples.append(time.perf_counter() - begin)
        latency_futures.append(handle)
        time.sleep(0.01)
    result.update(p50=percentile(samples, 0.5), p99=percentile(samples, 0.99))
    if after:
        after("latency", latency_futures)
    print(f"  {name}: single-task latency p50 {result['p50'] * 1e3:.2f} ms, p99 {result['p99'] * 1e3:.2f} ms",
          flush=True)
    return result


# ---------------------------------------------------------------- Lattice


def _ms(a: Optional[str], b: Optional[str]) -> Optional[float]:
    if not a or not b:
        return None

    def parse(text: str) -> float:
        text = text.replace("Z", "+00:00")
        head, _, tz = text.partition("+")
        if "." in head:
            base, frac = head.split(".")
            head = f"{base}.{frac[:6]}"
        return datetime.fromisoformat(f"{head}+{tz or '00:00'}").timestamp()

    return (parse(b) - parse(a)) * 1e3


def lattice_breakdown(kind: str, futures: List[Any]) -> None:
    """Where a task's time goes, from the service's timestamps."""
    rows = [f.task for f in futures if getattr(f, "task", None)]
    if not rows:
        return
    stages = {
        "queued (submitted -> dispatched to agent)": ("submitted_at", "dispatched_at"),
        "agent+worker dispatch (dispatched -> started)": ("dispatched_at", "started_at"),
        "run in worker incl. Python (started -> finished)": ("started_at", "finished_at"),
    }
    print(f"    lattice {kind} breakdown (median / p99 ms over {len(rows)} tasks):")
    for label, (a, b) in stages.items():
        values = [v for v in (_ms(t.get(a), t.get(b)) for t in rows) if v is not None]
        if values:
            print(f"      {label:55s} {statistics.median(values):8.2f} / {percentile(values, 0.99):8.2f}")
    if kind == "noop":
        first = min(t["submitted_at"] for t in rows)
        last = max(t["finished_at"] for t in rows)
        print(f"      first submission -> last finish (service clock): {_ms(first, last):.0f} ms")


class LatticeDev:
    def __init__(self, binary: str, database_url: Optional[str] = None, amqp_url: Optional[str] = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.root / "cfg"), LATTICE_PYTHON=sys.executable,
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        command = [binary, "dev", "--data-dir", str(self.root / "data"), "--listen", "127.0.0.1:0",
                   "--workers", str(WORKERS)]
        if database_url:
            command += ["--database-url", database_url]
        if amqp_url:
            command += ["--amqp-url", amqp_url]
        self.log = open(self.root / "dev.log", "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        profile = self.root / "cfg" / "lattice" / "profile.json"
        deadline = time.time() + 120
        while not profile.exists():
            self._alive(deadline)
            time.sleep(0.05)
        data = json.loads(profile.read_text())
        import lattice

        self.client = lattice.Client(data["url"], data["access_token"])
        while True:
            self._alive(deadline)
            try:
                endpoints = [e for e in self.client.list_endpoints() if e["name"] == "local"]
                if endpoints and endpoints[0]["status"] == "online" and endpoints[0]["workers"] >= WORKERS:
                    self.endpoint_id = endpoints[0]["id"]
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.1)

    def _alive(self, deadline: float) -> None:
        if self.process.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"lattice dev did not start: {(self.root / 'dev.log').read_text()[-3000:]}")

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def run_lattice(args: argparse.Namespace, name: str, database_url: Optional[str] = None,
                amqp_url: Optional[str] = None) -> Result:
    from lattice import Executor

    dev = LatticeDev(args.lattice_bin, database_url, amqp_url)
    try:
        with Executor(endpoint_id=dev.endpoint_id, client=dev.client) as ex:
            identity = lambda x: x  # noqa: E731 - the benchmark's no-op, as users write it
            return measure(name, ex.submit, lambda fs: [f.result() for f in fs], identity, args,
                           lambda fn, x: _one_lattice(ex, fn, x), after=lattice_breakdown)
    finally:
        dev.stop()


def _one_lattice(ex: Any, fn: Callable[..., Any], x: Any) -> Any:
    future = ex.submit(fn, x)
    future.result()
    return future


def run_lattice_pg(args: argparse.Namespace) -> Result:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qAtc"]
    subprocess.run(psql + [f"create schema {schema}"], check=True)
    try:
        return run_lattice(args, "lattice-pg",
                           f"postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}",
                           "amqp://guest:guest@127.0.0.1:5672/%2f")
    finally:
        subprocess.run(psql + [f"drop schema {schema} cascade"], check=False)


# ---------------------------------------------------------------- Parsl


def run_parsl(args: argparse.Namespace) -> Result:
    import parsl
    from parsl.app.app import python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = tempfile.mkdtemp(prefix="parsl-bench-")
    config = Config(
        executors=[HighThroughputExecutor(label="htex", max_workers_per_node=WORKERS, cores_per_worker=1,
                                          provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, strategy="none", usage_tracking=0,
    )
    dfk = parsl.load(config)
    try:
        apps: Dict[Any, Any] = {}

        def submit(fn: Callable[..., Any], x: Any) -> Any:
            app = apps.get(fn)
            if app is None:
                app = apps[fn] = python_app(fn)
            return app(x)

        identity = lambda x: x  # noqa: E731
        return measure("parsl-htex", submit, lambda fs: [f.result() for f in fs], identity, args,
                       lambda fn, x: submit(fn, x).result())
    finally:
        dfk.cleanup()
        parsl.clear()
        shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------- Dask


def run_dask(args: argparse.Namespace) -> Result:
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)
    try:
        identity = lambda x: x  # noqa: E731
        return measure("dask", lambda fn, x: client.submit(fn, x, pure=False), client.gather, identity, args,
                       lambda fn, x: client.submit(fn, x, pure=False).result())
    finally:
        client.close()
        cluster.close()


# ---------------------------------------------------------------- Celery

CELERY_APP = """
from celery import Celery
app = Celery("bench_celery_app", broker="amqp://guest:guest@127.0.0.1:5672//", backend="rpc://")
app.conf.task_default_queue = "{queue}"
app.conf.worker_prefetch_multiplier = 4
app.conf.accept_content = ["json"]

@app.task(name="noop")
def noop(x):
    return x

@app.task(name="burn")
def burn(ms=10):
    import time
    end = time.process_time() + ms / 1000.0
    while time.process_time() < end:
        pass
    return ms
"""


def run_celery(args: argparse.Namespace) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="celery-bench-"))
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    (workdir / "bench_celery_app.py").write_text(CELERY_APP.format(queue=queue))
    sys.path.insert(0, str(workdir))
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench_celery_app", "worker", "--concurrency", str(WORKERS),
         "--pool", "prefork", "--loglevel", "warning", "-Q", queue, "--without-gossip", "--without-mingle",
         "--without-heartbeat"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "worker.log", "wb"), start_new_session=True)
    try:
        import bench_celery_app as capp  # type: ignore[import-not-found]

        tasks = {noop: capp.noop, burn: capp.burn}
        deadline = time.time() + 60
        while True:
            try:
                capp.noop.delay(1).get(timeout=5)
                break
            except Exception:  # noqa: BLE001 - the worker is not up yet
                if time.time() > deadline:
                    raise
        # Celery runs tasks registered in the worker by name, not functions:
        # the no-op is the same `lambda x: x`, registered as `noop`.
        return measure("celery", lambda fn, x: tasks[fn].delay(x), lambda rs: [r.get(timeout=600) for r in rs],
                       noop, args, lambda fn, x: tasks[fn].delay(x).get(timeout=60))
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- main

SYSTEMS = {
    "lattice": lambda a: run_lattice(a, "lattice"),
    "lattice-pg": run_lattice_pg,
    "parsl": run_parsl,
    "dask": run_dask,
    "celery": run_celery,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lattice-bin", default=os.environ.get("LATTICE_BIN", "target/release/lattice"))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--noop", type=int, default=10_000)
    parser.add_argument("--cpu", type=int, default=1_000)
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    # Parsl starts its interchange and workers as commands of this venv.
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

    results: List[Result] = []
    for name in args.systems.split(","):
        print(f"== {name}", flush=True)
        try:
            results.append(SYSTEMS[name](args))
        except Exception as e:  # noqa: BLE001 - one failed peer must not hide the others
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)

    base = next((r for r in results if r["system"] == "lattice"), results[0] if results else None)
    print()
    print(f"{args.noop} no-op tasks, {args.cpu} x 10 ms CPU tasks, {WORKERS} workers each; "
          f"latency over {args.latency_samples} single tasks on an idle system")
    header = (f"{'system':12s} {'no-op tasks/s':>13s} {'no-op total s':>13s} {'cpu total s':>11s} "
              f"{'p50 ms':>8s} {'p99 ms':>8s} {'no-op rate vs lattice':>22s}")
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = r["noop_rate"] / base["noop_rate"] if base else float("nan")
        print(f"{r['system']:12s} {r['noop_rate']:13.0f} {r['noop_total']:13.2f} {r['cpu_total']:11.2f} "
              f"{r['p50'] * 1e3:8.2f} {r['p99'] * 1e3:8.2f} {ratio:21.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
