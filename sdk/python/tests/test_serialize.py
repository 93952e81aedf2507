"""Serialization of functions and data, without a service."""

from __future__ import annotations

import base64
import math

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
