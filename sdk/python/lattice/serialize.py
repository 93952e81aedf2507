"""How Python functions, arguments, return values and exceptions travel.

This module is shared by the SDK (the submitting side) and the worker (the
executing side), so it imports nothing beyond the standard library and
``cloudpickle`` (``dill`` only when a payload asks for it).

Wire format (an API boundary, see ``docs/python.md``):

* A function is registered as ``FunctionSpec::Python`` with ``payload`` =
  base64 of either its source text (``serializer="source"``, the callable is
  ``entry_point``) or of ``cloudpickle.dumps(fn)`` / ``dill.dumps(fn)``, and
  ``python_version`` = ``"MAJOR.MINOR"`` of the submitting interpreter.
* A task's arguments travel in the task's argument map under the single
  reserved key :data:`ARGS_KEY`: base64 of ``cloudpickle.dumps((args, kwargs))``.
  A task without that key calls the function with no arguments.
* A return value travels in ``TaskResult.value``: base64 of
  ``cloudpickle.dumps(value)``.
* A raised exception travels in ``TaskResult.exception``: its qualified type
  name, message, remote traceback text and, when it pickles, base64 of
  ``cloudpickle.dumps(exception)``.
"""

from __future__ import annotations

import ast
import base64
import builtins
import dis
import inspect
import pickle
import sys
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

#: The one argument key a ``python`` task may carry.
ARGS_KEY = "__lattice_payload__"

#: Serializers a ``python`` function may be registered with.
SERIALIZERS = ("source", "cloudpickle", "dill")

#: Pickle protocol of arguments, values and exceptions (readable by 3.8+).
PICKLE_PROTOCOL = 5


def python_version() -> str:
    """``MAJOR.MINOR`` of this interpreter, as recorded with functions."""
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


@dataclass(frozen=True)
class SerializedFunction:
    """The fields of a ``python`` function spec."""

    payload: str
    serializer: str
    python_version: str
    entry_point: Optional[str]

    def spec(self) -> Dict[str, Any]:
        """The ``FunctionSpec`` JSON object for ``POST /v1/functions``."""
        return {
            "kind": "python",
            "payload": self.payload,
            "serializer": self.serializer,
            "python_version": self.python_version,
            "entry_point": self.entry_point,
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _cloudpickle() -> Any:
    import cloudpickle

    return cloudpickle


# ---------------------------------------------------------------- functions


def _global_loads(code: types.CodeType) -> set:
    """Names a code object (and the code nested in it) reads as globals."""
    names = set()
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            names.add(instruction.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_loads(const)
    return names


def function_source(fn: Callable[..., Any]) -> Optional[str]:
    """The source of ``fn`` when it can be shipped as text and rebuilt
    exactly on another interpreter, else ``None``.

    That is a plain top-level ``def`` (no lambda, closure, decorator or
    method), whose body reads no global other than builtins (imports inside
    the body are fine), whose defaults are literals, and whose recompiled
    source gives the same names and constants (so a notebook cell edited
    after the definition is not shipped by mistake).
    """
    if not isinstance(fn, types.FunctionType):
        return None
    code = fn.__code__
    if fn.__name__ == "<lambda>" or "<locals>" in fn.__qualname__:
        return None
    if fn.__closure__ or code.co_freevars:
        return None
    builtin_names = set(dir(builtins))
    if not _global_loads(code) <= builtin_names:
        return None
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef):
        return None
    node = tree.body[0]
    if node.name != fn.__name__ or node.decorator_list:
        return None
    for default in list(node.args.defaults) + [d for d in node.args.kw_defaults if d is not None]:
        if not isinstance(default, ast.Constant):
            return None
    try:
        rebuilt = _exec_source(source, fn.__name__)
    except Exception:  # noqa: BLE001 - any failure means: not shippable as source
        return None
    if _code_signature(rebuilt.__code__) != _code_signature(code):
        return None
    return source


def _code_signature(code: types.CodeType) -> tuple:
    """What must match between a function and its recompiled source (the
    bytecode itself may differ with how the module was compiled)."""
    consts = tuple(_code_signature(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return (code.co_argcount, code.co_kwonlyargcount, code.co_names, code.co_varnames, consts)


def _exec_source(source: str, entry_point: str) -> Callable[..., Any]:
    import __future__

    # Annotations stay strings: a type named only in the submitter's
    # namespace must not fail the definition on the endpoint.
    code = compile(source, f"<lattice function {entry_point}>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: Dict[str, Any] = {"__name__": "__lattice__", "__builtins__": builtins}
    exec(code, namespace)  # noqa: S102 - running the user's function is the point
    fn = namespace.get(entry_point)
    if not callable(fn):
        raise ValueError(f"the source defines no callable named `{entry_point}`")
    return fn


def serialize_function(fn: Callable[..., Any], serializer: Optional[str] = None) -> SerializedFunction:
    """Serializes a callable: as ``source`` where possible (see
    :func:`function_source`), else with ``cloudpickle``; ``serializer``
    forces one of :data:`SERIALIZERS`.
    """
    if serializer is not None and serializer not in SERIALIZERS:
        raise ValueError(f"serializer must be one of {', '.join(SERIALIZERS)}, not {serializer!r}")
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    name = getattr(fn, "__name__", None)
    if serializer in (None, "source"):
        source = function_source(fn)
        if source is not None:
            return SerializedFunction(_b64(source.encode()), "source", python_version(), name)
        if serializer == "source":
            raise ValueError(
                f"{name or fn!r} cannot be shipped as source: only a top-level `def` that uses no "
                "globals but builtins (import inside the body), with literal defaults and no "
                "decorators, can; use serializer='cloudpickle'"
            )
    if serializer == "dill":
        import dill

        data = dill.dumps(fn, recurse=True)
        return SerializedFunction(_b64(data), "dill", python_version(), name)
    cloudpickle = _cloudpickle()
    # A function from the user's own module (a script's helper, a test
    # file) is pickled with that module's code: the endpoint cannot import it.
    module = _user_module_of(fn)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        data = cloudpickle.dumps(fn, protocol=PICKLE_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - reported with what failed
        raise TypeError(f"cannot serialize function {name or fn!r}: {e}") from e
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    return SerializedFunction(_b64(data), "cloudpickle", python_version(), name)


def _user_module_of(fn: Any) -> Optional[types.ModuleType]:
    """The module defining ``fn`` when it is neither ``__main__`` nor part
    of the standard library or an installed package."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ == "__main__":
        return None
    path = getattr(module, "__file__", None)
    if not path:
        return None
    import os
    import sysconfig

    path = os.path.realpath(path)
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        root = sysconfig.get_paths().get(key)
        if root and path.startswith(os.path.realpath(root) + os.sep):
            return None
    return module


def deserialize_function(payload: str, serializer: str, entry_point: Optional[str]) -> Callable[..., Any]:
    """Rebuilds a callable from its spec fields. Raises on bad input."""
    data = _unb64(payload)
    if serializer == "source":
        if not entry_point:
            raise ValueError("a source function needs an entry_point naming the callable")
        return _exec_source(data.decode("utf-8"), entry_point)
    if serializer == "cloudpickle":
        fn = pickle.loads(data)  # cloudpickle output is a standard pickle stream
    elif serializer == "dill":
        try:
            import dill
        except ImportError as e:
            raise ImportError(
                f"the function was serialized with dill, which is not installed in this "
                f"endpoint's Python ({sys.executable}): pip install dill"
            ) from e
        fn = dill.loads(data)
    else:
        raise ValueError(f"unknown serializer `{serializer}`")
    if not callable(fn):
        raise TypeError(f"the payload holds a {type(fn).__name__}, not a callable")
    return fn


# ---------------------------------------------------------------- data


#: Types that the standard pickler writes exactly as cloudpickle does (by
#: value, no reference to a module): see :func:`_plain`.
_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes)
#: Containers of plain values looked into at most this deep.
_PLAIN_DEPTH = 4
#: Containers with more items than this are left to cloudpickle (checking
#: them would cost more than it saves).
_PLAIN_ITEMS = 64


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is built only of builtin scalars, tuples, lists and
    dicts (exact types, not subclasses), so that ``pickle.dumps`` gives the
    same stream as ``cloudpickle.dumps`` at a fraction of the cost (no
    ``CloudPickler`` is built). Anything else, e.g. a function defined in
    ``__main__`` that cloudpickle must pickle by value, is not plain."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if depth >= _PLAIN_DEPTH:
        return False
    if kind is tuple or kind is list:
        return len(value) <= _PLAIN_ITEMS and all(_plain(item, depth + 1) for item in value)
    if kind is dict:
        return len(value) <= _PLAIN_ITEMS and all(
            type(key) in _PLAIN_SCALARS and _plain(item, depth + 1) for key, item in value.items())
    return False


def _dumps(value: Any) -> bytes:
    if _plain(value):
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL)
    return _cloudpickle().dumps(value, protocol=PICKLE_PROTOCOL)


def serialize_args(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> str:
    """Arguments of one call, for :data:`ARGS_KEY`."""
    return _b64(_dumps((tuple(args), dict(kwargs))))


def deserialize_args(text: Optional[str]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
    if not text:
        return (), {}
    args, kwargs = pickle.loads(_unb64(text))
    return tuple(args), dict(kwargs)


def serialize_value(value: Any) -> bytes:
    """A return value (raw bytes; base64 them for ``TaskResult.value``)."""
    return _dumps(value)


def deserialize_value(text: Optional[str]) -> Any:
    if text is None:
        return None
    return pickle.loads(_unb64(text))
