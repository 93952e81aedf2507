"""The examples run for real against `lattice dev`, so they never rot:
examples/python/*.py as scripts and examples/notebooks/*.ipynb through
nbclient (a real Jupyter kernel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run(platform, *args: str) -> str:
    out = subprocess.run([sys.executable, *args], env=platform.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{args}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_quickstart_script(platform):
    out = run(platform, str(EXAMPLES / "python" / "quickstart.py"))
    assert "Hello World!" in out
    assert "[0, 1, 4, 9, 16]" in out
    assert "hello from the shell" in out
    assert "ZeroDivisionError" in out


def test_bag_of_tasks_script(platform):
    out = run(platform, str(EXAMPLES / "python" / "bag_of_tasks.py"), platform.endpoint_id, "50")
    assert out.count("rate ") == 10


def test_reattach_script(platform):
    group = run(platform, str(EXAMPLES / "python" / "reattach.py"), "submit").strip()
    assert run(platform, str(EXAMPLES / "python" / "reattach.py"), "collect", group).strip() == "[0, 1, 4, 9]"


def test_bag_of_tasks_notebook(platform, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = EXAMPLES / "notebooks" / "bag_of_tasks.ipynb"
    notebook = nbformat.read(path, as_version=4)
    for key, value in platform.env().items():
        monkeypatch.setenv(key, value)
    # The kernel imports this SDK, not whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    monkeypatch.setenv("LATTICE_NOTEBOOK_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "300 results" in text
    assert "TypeError from the endpoint" in text
    assert "    x = rate * x * (1 - x)\n" in text  # the remote traceback shows the failing line
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plot was not shown inline"
    assert (tmp_path / "bag_of_tasks.png").stat().st_size > 1000
