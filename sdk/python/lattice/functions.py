"""Functions that are not Python callables: :class:`ShellFunction` and
:class:`WasmFunction`, and how every kind becomes a ``FunctionSpec``."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from lattice import serialize


@dataclass
class ShellResult:
    """What a shell or Wasm task produced (Globus Compute's ``ShellResult``)."""

    cmd: str
    stdout: str
    stderr: str
    returncode: Optional[int]
    #: The task's error when it failed (``command exited with status 3``).
    error: Optional[str] = None

    def __str__(self) -> str:
        return self.stdout


_QUOTED_PLACEHOLDER = re.compile(r"""(["'])\{([A-Za-z_][A-Za-z0-9_]*)\}\1""")


class ShellFunction:
    """A command line run by ``/bin/sh -c`` on the endpoint, with ``{name}``
    placeholders filled from the keyword arguments of ``submit`` (each value
    shell-quoted, so it is always one literal word)::

        bf = ShellFunction("echo {message}")
        fut = ex.submit(bf, message="hello")
        fut.result().stdout  # 'hello\\n'

    The result is a :class:`ShellResult` whatever the exit status (check
    ``returncode``); a walltime that expires raises :class:`~lattice.TaskTimeout`.
    """

    kind = "shell"

    def __init__(
        self,
        cmd: str,
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
        walltime: Optional[float] = None,
        snippet_lines: int = 1000,
        name: Optional[str] = None,
    ) -> None:
        if stdout is not None or stderr is not None:
            raise NotImplementedError(
                "ShellFunction(stdout=..., stderr=...) files are not supported: the result carries "
                "the output; redirect in the command (`cmd > file`) to keep a file on the endpoint"
            )
        self.cmd = cmd
        self.walltime = walltime
        self.snippet_lines = snippet_lines
        self.name = name

    def __repr__(self) -> str:
        return f"ShellFunction({self.cmd!r})"

    def spec(self) -> Dict[str, Any]:
        # Values are shell-quoted by the endpoint, so a placeholder written
        # inside quotes (`echo "{message}"`, as Globus Compute examples do)
        # loses them: the value is one literal word either way.
        return {"kind": "shell", "command": _QUOTED_PLACEHOLDER.sub(r"{\2}", self.cmd)}

    def arguments(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if args:
            raise TypeError(f"{self!r} takes keyword arguments only, for its {{name}} placeholders")
        return {key: value if isinstance(value, str) else _json_value(value) for key, value in kwargs.items()}

    def result(self, task: Dict[str, Any]) -> ShellResult:
        result = task.get("result") or {}
        return ShellResult(
            cmd=self.cmd,
            stdout=_last_lines(result.get("stdout", ""), self.snippet_lines),
            stderr=_last_lines(result.get("stderr", ""), self.snippet_lines),
            returncode=result.get("returncode"),
            error=task.get("error"),
        )


class WasmFunction:
    """A WASI (preview 1) command module run in the endpoint's Wasm sandbox.
    The keyword arguments of ``submit`` are passed as the task's argument
    map (see the runtime docs for how the module sees them); the result is
    a :class:`ShellResult` (stdout, stderr, exit code)."""

    kind = "wasm"

    def __init__(self, module: Union[str, Path, bytes], name: Optional[str] = None,
                 walltime: Optional[float] = None) -> None:
        if isinstance(module, (str, Path)):
            path = Path(module)
            self.module = path.read_bytes()
            self.name = name or path.stem
        else:
            self.module = bytes(module)
            self.name = name or "wasm"
        if self.module[:4] != b"\0asm":
            raise ValueError(f"{module!r} is not a WebAssembly module (missing the \\0asm header)")
        self.walltime = walltime
        self.cmd = self.name

    def __repr__(self) -> str:
        return f"WasmFunction({self.name!r}, {len(self.module)} bytes)"

    def spec(self) -> Dict[str, Any]:
        return {"kind": "wasm", "module": base64.b64encode(self.module).decode("ascii")}

    def arguments(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if args:
            raise TypeError(f"{self!r} takes keyword arguments only")
        return {key: value if isinstance(value, str) else _json_value(value) for key, value in kwargs.items()}

    def result(self, task: Dict[str, Any]) -> ShellResult:
        result = task.get("result") or {}
        return ShellResult(cmd=self.name, stdout=result.get("stdout", ""), stderr=result.get("stderr", ""),
                           returncode=result.get("returncode"), error=task.get("error"))


@dataclass
class PythonFunction:
    """A Python callable and its serialized form."""

    fn: Any
    serialized: serialize.SerializedFunction
    kind: str = field(default="python", init=False)

    def spec(self) -> Dict[str, Any]:
        return self.serialized.spec()

    @staticmethod
    def arguments(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        if not args and not kwargs:
            return {}
        return {serialize.ARGS_KEY: serialize.serialize_args(args, kwargs)}


def _json_value(value: Any) -> Any:
    if isinstance(value, (int, float, bool)) or value is None or isinstance(value, (list, dict)):
        return value
    return str(value)


def _last_lines(text: str, limit: int) -> str:
    if limit <= 0:
        return text
    lines = text.splitlines(keepends=True)
    return "".join(lines[-limit:])


def spec_of(function: Any, serializer: Optional[str] = None) -> Tuple[Dict[str, Any], Optional[str]]:
    """A ``FunctionSpec`` dict and a default name for anything submittable."""
    if isinstance(function, dict) and "kind" in function:
        return function, None
    if isinstance(function, (ShellFunction, WasmFunction)):
        return function.spec(), function.name
    if isinstance(function, PythonFunction):
        return function.spec(), function.serialized.entry_point
    serialized = serialize.serialize_function(function, serializer)
    return serialized.spec(), serialized.entry_point
