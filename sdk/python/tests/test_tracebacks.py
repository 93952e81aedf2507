"""Remote tracebacks show the failing source lines, as a local traceback
would, against a real `lattice dev`: for functions that travel as source,
pickled functions of this file, and functions from a notebook cell, whose
"file" exists only in the submitting kernel's ``linecache``."""

from __future__ import annotations

import linecache
import os
from pathlib import Path

import pytest

import lattice
from lattice import Executor, RemoteError, serialize


def divide(x):
    y = x - 1
    return 10 / y


OFFSET = 1


def divide_with_a_global(x):
    return helper(x + OFFSET)


def helper(x):
    return 10 / (x - 2)


def remote_traceback(gce, fn, *args):
    with pytest.raises(Exception) as caught:
        gce.submit(fn, *args).result(timeout=60)
    if isinstance(caught.value, RemoteError):
        return caught.value.remote_traceback
    return caught.value.__cause__.traceback


def test_functions_of_this_file_show_their_lines(endpoint):
    def nested(x):
        raise ValueError(f"bad value {x}")

    assert serialize.serialize_function(divide).serializer == "source"
    assert serialize.serialize_function(divide_with_a_global).serializer == "cloudpickle"
    with Executor(endpoint_id=endpoint) as gce:
        text = remote_traceback(gce, divide, 1)
        assert 'File "<lattice function divide>", line 3, in divide\n    return 10 / y\n' in text

        text = remote_traceback(gce, divide_with_a_global, 1)
        # The file's own name, not cloudpickle's "<dynamic-code>", and each line.
        line = divide_with_a_global.__code__.co_firstlineno + 1
        assert f'File "{__file__}", line {line}, in divide_with_a_global\n    return helper(x + OFFSET)\n' in text
        line = helper.__code__.co_firstlineno + 1
        assert f'File "{__file__}", line {line}, in helper\n    return 10 / (x - 2)\n' in text

        text = remote_traceback(gce, nested, 7)
        assert 'raise ValueError(f"bad value {x}")' in text


CELL = """\
SCALE = 2

def from_a_cell(x):
    scaled = x * SCALE
    return scaled / 0
"""


@pytest.fixture
def cell_function():
    """A function defined the way IPython defines a cell's: compiled under
    a file name that exists nowhere, its text only in ``linecache``."""
    filename = f"/nonexistent/ipykernel_{os.getpid()}/cell.py"
    linecache.cache[filename] = (len(CELL), None, CELL.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(CELL, filename, "exec"), namespace)  # noqa: S102
    yield namespace["from_a_cell"], filename
    linecache.cache.pop(filename, None)
    serialize._SHIPPED.pop(filename, None)


def test_a_notebook_cells_function_shows_its_lines(endpoint, cell_function):
    fn, filename = cell_function
    with Executor(endpoint_id=endpoint) as gce:
        text = remote_traceback(gce, fn, 1)
    assert f'File "{filename}", line 5, in from_a_cell\n    return scaled / 0\n' in text


def test_an_exception_that_does_not_pickle_shows_its_lines_too(endpoint):
    def locked():
        import threading

        error = RuntimeError("holding a lock")
        error.lock = threading.Lock()
        raise error

    with Executor(endpoint_id=endpoint) as gce:
        text = remote_traceback(gce, locked)
    assert "raise error" in text


def test_in_a_real_notebook_the_cells_lines_show(platform, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbformat.v4 import new_code_cell, new_notebook

    for key, value in platform.env().items():
        monkeypatch.setenv(key, value)
    # The kernel imports this SDK, not whichever one is installed.
    monkeypatch.setenv("PYTHONPATH", str(Path(lattice.__file__).resolve().parents[1]))
    notebook = new_notebook(cells=[
        new_code_cell("import os\nfrom lattice import Executor\nSCALE = 2"),
        new_code_cell("def from_a_cell(x):\n    scaled = x * SCALE\n    return scaled / 0"),
        new_code_cell("with Executor(endpoint_id=os.environ['LATTICE_ENDPOINT_ID']) as ex:\n"
                      "    try:\n"
                      "        ex.submit(from_a_cell, 1).result()\n"
                      "    except ZeroDivisionError as e:\n"
                      "        print(e.__cause__.traceback)"),
    ])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for o in notebook.cells[2].outputs)
    assert ", line 3, in from_a_cell\n    return scaled / 0\n" in text
    assert "<dynamic-code>" not in text
