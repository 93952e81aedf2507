"""Serialization of functions and data, without a service."""

from __future__ import annotations

import base64
import linecache
import math
import pickle

import pytest

from lattice import serialize

SCALE = 3


def plain(x, y=2):
    return x * y


def uses_a_global(x):
    return x * SCALE


def imports_inside(x):
    import math

    return math.sqrt(x)


def uses_math_global(x):
    return math.sqrt(x)


def with_default_global(x, y=SCALE):
    return x + y


def test_self_contained_defs_travel_as_source():
    s = serialize.serialize_function(plain)
    assert s.serializer == "source"
    assert s.entry_point == "plain"
    assert base64.b64decode(s.payload).decode().startswith("def plain(x, y=2):")
    fn = serialize.deserialize_function(s.payload, s.serializer, s.entry_point)
    assert fn(4) == 8
    assert serialize.serialize_function(imports_inside).serializer == "source"


@pytest.mark.parametrize("fn", [uses_a_global, uses_math_global, with_default_global, lambda x: x + 1])
def test_functions_that_need_their_globals_are_pickled(fn):
    s = serialize.serialize_function(fn)
    assert s.serializer == "cloudpickle"
    rebuilt = serialize.deserialize_function(s.payload, s.serializer, s.entry_point)
    assert rebuilt(4) == fn(4)


def test_closures_are_pickled():
    factor = 5

    def times(x):
        return x * factor

    s = serialize.serialize_function(times)
    assert s.serializer == "cloudpickle"
    assert serialize.deserialize_function(s.payload, s.serializer, s.entry_point)(2) == 10


def test_forcing_source_on_a_closure_explains_why_not():
    with pytest.raises(ValueError, match="cannot be shipped as source"):
        serialize.serialize_function(lambda: 1, "source")


def test_dill_is_supported():
    pytest.importorskip("dill")
    s = serialize.serialize_function(uses_a_global, "dill")
    assert s.serializer == "dill"
    assert serialize.deserialize_function(s.payload, s.serializer, s.entry_point)(2) == 6


def test_args_and_values_round_trip():
    text = serialize.serialize_args((1, [2, 3]), {"k": {"a": None}})
    assert serialize.deserialize_args(text) == ((1, [2, 3]), {"k": {"a": None}})
    assert serialize.deserialize_args(None) == ((), {})
    value = base64.b64encode(serialize.serialize_value({"x": 1.5})).decode()
    assert serialize.deserialize_value(value) == {"x": 1.5}


def test_python_version_is_major_minor():
    major, minor = serialize.python_version().split(".")
    assert major.isdigit() and minor.isdigit()


def _cell(source: str, filename: str):
    """Defines the first function of ``source`` as IPython defines a cell's:
    under a file name that exists nowhere, its text only in ``linecache``."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return next(v for k, v in namespace.items() if callable(v) and not k.startswith("__"))


@pytest.mark.parametrize("serializer", ["cloudpickle", "dill"])
def test_pickled_functions_carry_their_source_lines_and_file_name(serializer):
    if serializer == "dill":
        pytest.importorskip("dill")
    filename = "/nonexistent/lattice-test/cell-%s.py" % serializer
    fn = _cell("SCALE = 3\n\n\ndef cell(x):\n    return x * SCALE\n", filename)
    try:
        s = serialize.serialize_function(fn, serializer)
        data = base64.b64decode(s.payload)
        assert serialize.SOURCE_MARK in data
        # A worker of an older SDK unpickles the same payload: pickle.loads
        # ignores what follows the pickle.
        old = pickle.loads(data) if serializer == "cloudpickle" else __import__("dill").loads(data)
        assert old(2) == 6
        assert old.__code__.co_filename == filename  # not cloudpickle's "<dynamic-code>"
        # On the endpoint the cell's text is nowhere but in the payload.
        linecache.cache.pop(filename)
        rebuilt = serialize.deserialize_function(s.payload, s.serializer, s.entry_point)
        assert rebuilt(2) == 6
        assert linecache.getline(filename, 5) == "    return x * SCALE\n"
        assert linecache.getline(filename, 1) == "\n"  # lines not shipped are blank
    finally:
        linecache.cache.pop(filename, None)
        serialize._SHIPPED.pop(filename, None)


def test_payloads_without_source_lines_still_load():
    import cloudpickle

    def times(x):
        return x * 7

    # What an SDK before the source lines sent: the bare pickle.
    payload = base64.b64encode(cloudpickle.dumps(times)).decode()
    assert serialize.deserialize_function(payload, "cloudpickle", "times")(2) == 14
    # Trailing bytes that are not source lines are ignored, never an error.
    payload = base64.b64encode(cloudpickle.dumps(times) + serialize.SOURCE_MARK + b"{not json").decode()
    assert serialize.deserialize_function(payload, "cloudpickle", "times")(3) == 21


def test_source_functions_register_their_text_once_per_version():
    first = serialize.deserialize_function(base64.b64encode(b"def twin():\n    return 1\n").decode(), "source",
                                           "twin")
    second = serialize.deserialize_function(base64.b64encode(b"def twin():\n\n    return 2\n").decode(),
                                            "source", "twin")
    # Two texts of one name in one worker each keep their own lines.
    assert linecache.getline(first.__code__.co_filename, 2) == "    return 1\n"
    assert linecache.getline(second.__code__.co_filename, 3) == "    return 2\n"
    assert first.__code__.co_filename != second.__code__.co_filename
