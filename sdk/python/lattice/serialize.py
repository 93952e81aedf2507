"""How Python functions, arguments, return values and exceptions travel.

This module is shared by the SDK (the submitting side) and the worker (the
executing side), so it imports nothing beyond the standard library and
``cloudpickle`` (``dill`` only when a payload asks for it).

Wire format (an API boundary, see ``docs/python.md``):

* A function is registered as ``FunctionSpec::Python`` with ``payload`` =
  base64 of either its source text (``serializer="source"``, the callable is
  ``entry_point``) or of ``cloudpickle.dumps(fn)`` / ``dill.dumps(fn)``, and
  ``python_version`` = ``"MAJOR.MINOR"`` of the submitting interpreter.
  A pickled function may be followed, in the same payload, by
  :data:`SOURCE_MARK` and a JSON object ``{filename: [[first_line, text],
  ...]}``: the source lines of the function (and of the functions of the
  user's own code it calls), so that the worker's tracebacks show them.
  ``pickle.loads`` ignores bytes after the pickle, so a worker that does not
  know the mark still loads the function, and a payload without it loads
  as before.
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
import io
import json
import linecache
import os
import pickle
import sys
import textwrap
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

#: The one argument key a ``python`` task may carry.
ARGS_KEY = "__lattice_payload__"

#: Serializers a ``python`` function may be registered with.
SERIALIZERS = ("source", "cloudpickle", "dill")

#: Pickle protocol of arguments, values and exceptions (readable by 3.8+).
PICKLE_PROTOCOL = 5

#: Separates a pickled function from the source lines shipped after it.
SOURCE_MARK = b"\n#lattice-source\n"

#: Most functions, and characters of source, shipped with one function.
_SOURCE_FUNCTIONS = 64
_SOURCE_CHARS = 1 << 20


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


def _exec_source(source: str, entry_point: str, register: bool = False) -> Callable[..., Any]:
    """Defines the function of a ``source`` payload; ``register`` puts its
    text in ``linecache`` (on the endpoint) so that tracebacks show it."""
    import __future__

    filename = f"<lattice function {entry_point}>"
    if register:
        filename = _register_text(filename, source)
    # Annotations stay strings: a type named only in the submitter's
    # namespace must not fail the definition on the endpoint.
    code = compile(source, filename, "exec",
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
        return SerializedFunction(_b64(data + _source_trailer(fn)), "dill", python_version(), name)
    cloudpickle = _cloudpickle()
    # A function from the user's own module (a script's helper, a test
    # file) is pickled with that module's code: the endpoint cannot import it.
    module = _user_module_of(fn)
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        stream = io.BytesIO()
        _function_pickler()(stream, protocol=PICKLE_PROTOCOL).dump(fn)
        data = stream.getvalue()
    except Exception as e:  # noqa: BLE001 - reported with what failed
        raise TypeError(f"cannot serialize function {name or fn!r}: {e}") from e
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)
    return SerializedFunction(_b64(data + _source_trailer(fn)), "cloudpickle", python_version(), name)


_FUNCTION_PICKLER: Any = None


def _function_pickler() -> Any:
    """cloudpickle's ``Pickler``, except that code pickled by value keeps
    its file name (cloudpickle 3 writes ``<dynamic-code>`` instead), so that
    the endpoint's tracebacks name the user's file and find its shipped
    lines. With a cloudpickle that has no such hook, cloudpickle's own."""
    global _FUNCTION_PICKLER
    if _FUNCTION_PICKLER is not None:
        return _FUNCTION_PICKLER
    import collections

    cloudpickle = _cloudpickle()
    base = cloudpickle.Pickler
    reduce_code = getattr(base, "dispatch_table", {}).get(types.CodeType)
    if reduce_code is None:
        _FUNCTION_PICKLER = base
        return base

    def keep_filename(code: types.CodeType) -> Any:
        constructor, args = reduce_code(code)
        # The file name is the first string argument equal to the
        # placeholder (it comes before the code's name in every version).
        for i, arg in enumerate(args):
            if type(arg) is str and arg == "<dynamic-code>" and code.co_filename != arg:
                args = args[:i] + (code.co_filename,) + args[i + 1:]
                break
        return constructor, args

    class FunctionPickler(base):  # type: ignore[misc, valid-type]
        dispatch_table = collections.ChainMap({types.CodeType: keep_filename}, base.dispatch_table)

    _FUNCTION_PICKLER = FunctionPickler
    return FunctionPickler


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
        return _exec_source(data.decode("utf-8"), entry_point, register=True)
    stream = io.BytesIO(data)
    if serializer == "cloudpickle":
        fn = pickle.load(stream)  # cloudpickle output is a standard pickle stream
    elif serializer == "dill":
        try:
            import dill
        except ImportError as e:
            raise ImportError(
                f"the function was serialized with dill, which is not installed in this "
                f"endpoint's Python ({sys.executable}): pip install dill"
            ) from e
        fn = dill.load(stream)
    else:
        raise ValueError(f"unknown serializer `{serializer}`")
    if not callable(fn):
        raise TypeError(f"the payload holds a {type(fn).__name__}, not a callable")
    _register_trailer(stream.read())
    return fn


# ---------------------------------------------------------------- source lines
#
# A pickled function carries bytecode, not text: on the endpoint,
# ``linecache`` finds no source for it (unless the same file happens to
# exist there), and tracebacks show ``File "...", line 3, in f`` without the
# line. So the source lines go along, after the pickle (see the module
# docstring), and the worker registers them in ``linecache``.


def _by_value(fn: types.FunctionType) -> bool:
    """Whether cloudpickle ships ``fn`` by value, i.e. the endpoint cannot
    import it: defined in ``__main__`` (a script, a notebook), in the user's
    own module, nested in a function, or a lambda."""
    module = getattr(fn, "__module__", None)
    if module in (None, "__main__") or module not in sys.modules:
        return True
    if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
        return True
    return _user_module_of(fn) is not None


def _source_segments(fn: Callable[..., Any]) -> Dict[str, List[List[Any]]]:
    """``{filename: [[first_line, text], ...]}``: the source of ``fn`` and of
    the functions shipped by value it reaches through its globals and
    closure (the helpers in a traceback below it). Whatever has no source
    here (a function typed at a plain REPL) is left out."""
    files: Dict[str, List[List[Any]]] = {}
    todo, seen, chars = [fn], set(), 0
    while todo and len(seen) < _SOURCE_FUNCTIONS:
        f = todo.pop()
        if not isinstance(f, types.FunctionType) or id(f) in seen:
            continue
        seen.add(id(f))
        if not _by_value(f):
            continue
        filename = f.__code__.co_filename
        try:
            lines, first = inspect.getsourcelines(f)
        except Exception:  # noqa: BLE001 - OSError, TypeError... : no source to ship
            lines, first = [], 0
        text = "".join(lines)
        segments = files.setdefault(filename, [])
        inside = any(start <= first and first + len(lines) <= start + len(_lines(t)) for start, t in segments)
        if first > 0 and text and not inside and chars + len(text) <= _SOURCE_CHARS:
            segments.append([first, text])
            chars += len(text)
        names = _global_loads(f.__code__)
        todo.extend(f.__globals__[n] for n in names if n in f.__globals__)
        for cell in f.__closure__ or ():
            try:
                todo.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
    return {name: segments for name, segments in files.items() if segments}


def _source_trailer(fn: Callable[..., Any]) -> bytes:
    """What follows the pickle of ``fn`` in its payload: :data:`SOURCE_MARK`
    and the JSON of :func:`_source_segments`, or nothing."""
    try:
        segments = _source_segments(fn)
    except Exception:  # noqa: BLE001 - source lines are a courtesy, never a failure
        return b""
    if not segments:
        return b""
    return SOURCE_MARK + json.dumps(segments).encode("utf-8")


#: Lines registered in ``linecache`` by this process, by file name.
_SHIPPED: Dict[str, List[str]] = {}


def _register_trailer(trailer: bytes) -> None:
    """Registers the source lines that followed a pickled function."""
    if not trailer.startswith(SOURCE_MARK):
        return  # an old payload (nothing), or a format this version does not know
    try:
        files = json.loads(trailer[len(SOURCE_MARK):].decode("utf-8"))
        for filename, segments in files.items():
            _register_lines(filename, [(int(first), str(text)) for first, text in segments])
    except Exception:  # noqa: BLE001 - bad source lines must not fail the function
        pass


def _register_lines(filename: str, segments: List[Tuple[int, str]]) -> None:
    """Puts ``segments`` (first line number, text) of ``filename`` in
    ``linecache``, merged with what was registered for it before; blank
    lines elsewhere. A file this machine has is left to ``linecache``."""
    if not filename or (not filename.startswith("<") and os.path.exists(filename)):
        return
    lines = _SHIPPED.setdefault(filename, [])
    for first, text in segments:
        if first < 1:
            continue
        new = _lines(text)
        end = first - 1 + len(new)
        if len(lines) < end:
            lines.extend("\n" for _ in range(end - len(lines)))
        lines[first - 1:end] = new
    # mtime None: linecache.checkcache keeps the entry (there is no file to check).
    linecache.cache[filename] = (sum(len(line) for line in lines), None, lines, filename)


def _lines(text: str) -> List[str]:
    """``text`` as ``linecache`` holds it: lines ending in a newline, split
    where Python counts lines (not at the other breaks ``splitlines`` knows)."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line + "\n" for line in lines]


def _register_text(filename: str, source: str) -> str:
    """Registers the whole ``source`` under ``filename``, or under a
    numbered variant when another text already has that name (two versions
    of a function of the same name in one worker). Returns the name used."""
    lines = _lines(source)
    base, n = filename, 1
    while filename in _SHIPPED and _SHIPPED[filename] != lines:
        n += 1
        filename = f"{base[:-1]} #{n}>"
    _SHIPPED[filename] = lines
    linecache.cache[filename] = (sum(len(line) for line in lines), None, lines, filename)
    return filename


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
