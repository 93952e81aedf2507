"""A real ``lattice dev`` platform for the tests that need one.

The binary is ``$LATTICE_BIN``, else ``lattice`` in the cargo target dir
(``$CARGO_TARGET_DIR``, ``/var/cache/lattice/target``, ``target/`` of the
repository), debug build first. Without one, those tests are skipped, or
fail when ``LATTICE_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def lattice_binary() -> Optional[Path]:
    explicit = os.environ.get("LATTICE_BIN")
    if explicit:
        return Path(explicit)
    dirs = [os.environ.get("CARGO_TARGET_DIR"), "/var/cache/lattice/target", str(REPO / "target")]
    for base in filter(None, dirs):
        for profile in ("debug", "release"):
            candidate = Path(base) / profile / "lattice"
            if candidate.is_file():
                return candidate
    return None


def skip_or_fail(reason: str) -> None:
    if os.environ.get("LATTICE_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


class Platform:
    """A running ``lattice dev``: its URL, token, ``local`` endpoint and config dir."""

    def __init__(self, binary: Path, root: Path) -> None:
        self.root = root
        self.config_home = root / "cfg"
        self.log_path = root / "lattice-dev.log"
        env = dict(os.environ)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        # The endpoint's workers run Python functions with this interpreter,
        # which has the SDK (and so lattice.worker) installed.
        env["LATTICE_PYTHON"] = sys.executable
        env.setdefault("RUST_LOG", "info,sqlx=warn")
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [str(binary), "dev", "--data-dir", str(root / "data"), "--listen", "127.0.0.1:0"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        profile = self.config_home / "lattice" / "profile.json"
        deadline = time.monotonic() + 120
        while not profile.exists():
            self._check_alive(deadline)
            time.sleep(0.05)
        data = json.loads(profile.read_text())
        self.url: str = data["url"]
        self.token: str = data["access_token"]
        self.profile = profile
        import httpx

        headers = {"authorization": f"Bearer {self.token}"}
        self.endpoint_id = ""
        while True:
            self._check_alive(deadline)
            try:
                endpoints = httpx.get(f"{self.url}/v1/endpoints", headers=headers, timeout=5).json()
                local = [e for e in endpoints if e["name"] == "local"]
                if local and local[0]["status"] == "online" and local[0].get("workers", 0) > 0:
                    self.endpoint_id = local[0]["id"]
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.1)

    def _check_alive(self, deadline: float) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"lattice dev exited with {self.process.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"lattice dev did not become ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def env(self) -> Dict[str, str]:
        """Environment for a subprocess that should find this platform through the profile."""
        env = dict(os.environ)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        env.pop("LATTICE_URL", None)
        env.pop("LATTICE_TOKEN", None)
        env["LATTICE_ENDPOINT_ID"] = self.endpoint_id
        return env

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    binary = lattice_binary()
    if binary is None or not binary.exists():
        skip_or_fail("no lattice binary (cargo build -p lattice-cli, or set LATTICE_BIN)")
    root = Path(tempfile.mkdtemp(prefix="lattice-sdk-test-"))
    saved = os.environ.get("XDG_CONFIG_HOME")
    running = Platform(binary, root)
    # Client() in the tests finds the platform through the profile, as a user's would.
    os.environ["XDG_CONFIG_HOME"] = str(running.config_home)
    for name in ("LATTICE_URL", "LATTICE_TOKEN"):
        os.environ.pop(name, None)
    try:
        yield running
    finally:
        running.stop()
        if saved is None:
            os.environ.pop("XDG_CONFIG_HOME", None)
        else:
            os.environ["XDG_CONFIG_HOME"] = saved
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def endpoint(platform: Platform) -> str:
    return platform.endpoint_id
