"""``lattice.Client``: the REST API of a Lattice service, and ``login()``.

The client finds its service and token the way the CLI does: explicit
arguments, then ``LATTICE_URL`` / ``LATTICE_TOKEN``, then the saved profile
(``$XDG_CONFIG_HOME/lattice/profile.json``, written by ``lattice login``,
``lattice dev`` or :func:`login`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import httpx

from lattice import serialize
from lattice.errors import (
    RELOGIN_HINT,
    APIError,
    AuthExpired,
    Forbidden,
    FunctionNotAllowed,
    NotConfigured,
)
from lattice.profile import Profile, default_path, expires_at_from
from lattice.tasks import TaskInfo
from lattice.tls import explain as explain_tls, ssl_context

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

JSON = Dict[str, Any]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, message = body["code"], body["message"]
        request_id = body.get("request_id")
    except Exception:  # noqa: BLE001 - not the API's error body
        code, message, request_id = "http_error", response.text[:500] or response.reason_phrase, None
    raise error_from(response.status_code, code, message, request_id)


def error_from(status: int, code: str, message: str, request_id: Optional[str] = None) -> APIError:
    """The exception for an API error body."""
    if status == 401:
        return AuthExpired(status, code, message, request_id)
    if status == 403:
        if "not allowed" in message:
            return FunctionNotAllowed("", message, None, status, code)
        return Forbidden(status, code, message, request_id)
    return APIError(status, code, message, request_id)


class Client:
    """A connection to one Lattice service.

    ``Client()`` uses ``LATTICE_URL`` / ``LATTICE_TOKEN`` or the saved
    profile; ``Client(url, token)`` names them. Safe to share between threads.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        profile_path: Optional[Union[str, Path]] = None,
        timeout: float = 60.0,
    ) -> None:
        self.profile_path = Path(profile_path) if profile_path else default_path()
        profile = None
        if url is None or token is None:
            profile = Profile.load(self.profile_path)
        env_url, env_token = os.environ.get("LATTICE_URL"), os.environ.get("LATTICE_TOKEN")
        self.url = (url or env_url or (profile.url if profile else None) or "").rstrip("/")
        if not self.url:
            raise NotConfigured(
                "no Lattice service is configured: run `lattice login` (or `lattice dev`), call "
                "lattice.login(url) in a notebook, or set LATTICE_URL and LATTICE_TOKEN"
            )
        self.token = token or env_token or (profile.access_token if profile and profile.url.rstrip("/") == self.url else None)
        # Only a token from the profile can be refreshed and saved back.
        self._profile = profile if (profile and not token and not env_token and self.token == profile.access_token) else None
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=False, verify=ssl_context())

    # ------------------------------------------------------------ plumbing

    def __repr__(self) -> str:
        return f"lattice.Client({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _headers(self) -> Dict[str, str]:
        if not self.token:
            raise NotConfigured(f"no token for {self.url}: {RELOGIN_HINT}")
        return {"authorization": f"Bearer {self.token}"}

    def _refresh(self) -> bool:
        """Trades the profile's refresh token for a new access token."""
        profile = self._profile
        if profile is None or not profile.refresh_token:
            return False
        with self._lock:
            if self.token != profile.access_token:
                return True  # another thread refreshed already
            response = self._http.post("/v1/auth/token", json={
                "grant_type": "refresh_token", "refresh_token": profile.refresh_token})
            if response.status_code >= 400:
                return False
            body = response.json()
            profile.access_token = body["access_token"]
            profile.refresh_token = body.get("refresh_token") or profile.refresh_token
            profile.expires_at = expires_at_from(body.get("expires_in", 0))
            profile.save(self.profile_path)
            self.token = profile.access_token
            return True

    def request(self, method: str, path: str, *, json: Any = None, params: Optional[Dict[str, Any]] = None) -> Any:
        """Sends one API request; returns the decoded JSON (``None`` for 204)."""
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, json=json, params=params, headers=self._headers())
            except httpx.TransportError as e:
                detail = explain_tls(e, self.url) or str(e)
                raise APIError(0, "unreachable", f"cannot reach the Lattice service at {self.url}: {detail}") from e
            if response.status_code == 401 and attempt == 1 and self._refresh():
                continue
            _raise_for(response)
            if response.status_code == 204 or not response.content:
                return None
            return response.json()
        raise AssertionError("unreachable")

    def session_url(self) -> str:
        """The WebSocket URL of the session stream (submissions and results)."""
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/v1/stream"

    def stream_url(self, batch_id: str) -> str:
        """The WebSocket URL of a batch's result stream."""
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/v1/batches/{batch_id}/stream"

    # ------------------------------------------------------------ identity

    def health(self) -> JSON:
        return self._http.get("/v1/health").json()

    def whoami(self) -> JSON:
        return self.request("GET", "/v1/auth/whoami")

    # ------------------------------------------------------------ functions

    def register_function(
        self,
        function: Any,
        *,
        name: Optional[str] = None,
        description: Optional[str] = None,
        serializer: Optional[str] = None,
    ) -> str:
        """Registers a Python callable, a :class:`~lattice.ShellFunction` or
        a :class:`~lattice.WasmFunction` (or a raw ``FunctionSpec`` dict);
        returns its function id. Registering the same function again returns
        the same id.
        """
        from lattice.functions import spec_of

        spec, default_name = spec_of(function, serializer)
        body: JSON = {"spec": spec}
        if name or default_name:
            body["name"] = name or default_name
        if description:
            body["description"] = description
        return self.request("POST", "/v1/functions", json=body)["id"]

    def get_function(self, function_id: str) -> JSON:
        return self.request("GET", f"/v1/functions/{function_id}")

    def list_functions(self) -> List[JSON]:
        return self.request("GET", "/v1/functions")

    def delete_function(self, function_id: str) -> None:
        self.request("DELETE", f"/v1/functions/{function_id}")

    # --------------------------------------------------------------- sharing

    def share_function(self, function_id: str, *principals: str, public: bool = False) -> List[str]:
        """Let ``principals`` (``identity:ID``, ``group:ID``,
        ``all_authenticated_users``; ``public=True`` adds ``public``: anyone
        with a token) run the function. Returns every principal it is
        shared with now."""
        return self._share("functions", function_id, principals, public)

    def unshare_function(self, function_id: str, principal: str) -> None:
        """Revoke one grant; new submissions are checked, running tasks finish."""
        self.request("DELETE", f"/v1/functions/{function_id}/grants/{principal}")

    def function_grants(self, function_id: str) -> List[str]:
        return self.request("GET", f"/v1/functions/{function_id}/grants")

    def share_endpoint(self, endpoint_id: str, *principals: str) -> List[str]:
        """Let ``principals`` submit tasks to the endpoint (a multi-user
        endpoint then takes tasks from its grantees only)."""
        return self._share("endpoints", endpoint_id, principals, False)

    def unshare_endpoint(self, endpoint_id: str, principal: str) -> None:
        self.request("DELETE", f"/v1/endpoints/{endpoint_id}/grants/{principal}")

    def endpoint_grants(self, endpoint_id: str) -> List[str]:
        return self.request("GET", f"/v1/endpoints/{endpoint_id}/grants")

    def _share(self, kind: str, resource_id: str, principals: Iterable[str], public: bool) -> List[str]:
        wanted = list(principals) + (["public"] if public else [])
        if not wanted:
            raise ValueError("give at least one principal (or public=True)")
        return self.request("POST", f"/v1/{kind}/{resource_id}/grants", json={"principals": wanted})

    # ------------------------------------------------------------ endpoints

    def list_endpoints(self) -> List[JSON]:
        return self.request("GET", "/v1/endpoints")

    def get_endpoint(self, endpoint_id: str) -> JSON:
        return self.request("GET", f"/v1/endpoints/{endpoint_id}")

    def get_endpoint_status(self, endpoint_id: str) -> str:
        """``online`` or ``offline``."""
        return self.get_endpoint(endpoint_id)["status"]

    def endpoint_id(self, name_or_id: str) -> str:
        """The id of the caller's endpoint named ``name_or_id`` (or the id itself)."""
        for endpoint in self.list_endpoints():
            if endpoint["id"] == name_or_id or endpoint["name"] == name_or_id:
                return endpoint["id"]
        raise LookupError(f"no endpoint named {name_or_id!r}; `lattice endpoint list` shows yours")

    # ------------------------------------------------------------ tasks

    def submit_batch(
        self,
        function_id: str,
        endpoint_id: str,
        tasks: Sequence[Dict[str, Any]],
        *,
        walltime: Optional[int] = None,
        max_retries: Optional[int] = None,
    ) -> JSON:
        """``POST /v1/batches``: one task per argument map. Returns
        ``{"batch_id", "task_ids"}``."""
        body: JSON = {"function_id": function_id, "endpoint_id": endpoint_id, "tasks": list(tasks)}
        if walltime is not None:
            body["walltime_secs"] = int(walltime)
        if max_retries is not None:
            body["max_retries"] = int(max_retries)
        return self.request("POST", "/v1/batches", json=body)

    def run(self, *args: Any, endpoint_id: str, function_id: str, **kwargs: Any) -> str:
        """Submits one call of a registered Python function; returns the task id
        (Globus Compute's ``Client.run``)."""
        task = {serialize.ARGS_KEY: serialize.serialize_args(args, kwargs)}
        return self.submit_batch(function_id, endpoint_id, [task])["task_ids"][0]

    def get_task(self, task_id: str) -> TaskInfo:
        return TaskInfo(self.request("GET", f"/v1/tasks/{task_id}"))

    def get_tasks(self, task_ids: Iterable[str]) -> List[TaskInfo]:
        """Many tasks in few round trips (``POST /v1/tasks/status``)."""
        ids = list(task_ids)
        out: List[TaskInfo] = []
        for start in range(0, len(ids), 10_000):
            tasks = self.request("POST", "/v1/tasks/status", json={"task_ids": ids[start:start + 10_000]})
            out.extend(TaskInfo(task) for task in tasks)
        return out

    def list_tasks(self, *, state: Optional[str] = None, batch_id: Optional[str] = None,
                   limit: Optional[int] = None) -> List[TaskInfo]:
        params = {k: v for k, v in {"state": state, "batch_id": batch_id, "limit": limit}.items() if v is not None}
        return [TaskInfo(task) for task in self.request("GET", "/v1/tasks", params=params)]

    def cancel_task(self, task_id: str) -> JSON:
        return self.request("POST", f"/v1/tasks/{task_id}/cancel", json={})

    def get_batch_status(self, batch_id: str) -> JSON:
        return self.request("GET", f"/v1/batches/{batch_id}")

    def get_result(self, task_id: str) -> Any:
        """The result of a finished task, as :meth:`LatticeFuture.result`
        gives it; raises if it failed or ``LookupError`` while it runs."""
        from lattice.results import outcome

        task = self.get_task(task_id)
        if task["state"] not in ("success", "failed", "cancelled"):
            raise LookupError(f"task {task_id} is {task['state']}")
        return outcome(task, None).unwrap()

    def get_batch_result(self, task_ids: Iterable[str]) -> Dict[str, JSON]:
        """Status of many tasks: ``{task_id: {"pending", "status", "result" | "exception"}}``
        (Globus Compute's shape)."""
        from lattice.results import outcome

        out: Dict[str, JSON] = {}
        for task in self.get_tasks(task_ids):
            final = task["state"] in ("success", "failed", "cancelled")
            entry: JSON = {"pending": not final, "status": task["state"]}
            if final:
                result = outcome(task, None)
                if result.ok:
                    entry["result"] = result.value
                else:
                    entry["exception"] = result.error
            out[task["id"]] = entry
        return out


def login(
    url: Optional[str] = None,
    *,
    profile_path: Optional[Union[str, Path]] = None,
    timeout: float = 600.0,
    open_browser: bool = False,
    output: Callable[[str], None] = print,
) -> Client:
    """Logs in through the service's identity provider, for notebooks (no
    terminal needed): prints a link to open in any browser, waits until the
    login is done there, saves the token in the profile the CLI uses
    (mode 0600) and returns a :class:`Client`.

    ``url`` defaults to ``LATTICE_URL``, then the saved profile's URL.
    """
    path = Path(profile_path) if profile_path else default_path()
    if url is None:
        url = os.environ.get("LATTICE_URL")
    if url is None:
        saved = Profile.load(path)
        url = saved.url if saved else None
    if not url:
        raise NotConfigured("lattice.login() needs the service URL, e.g. lattice.login('https://lattice.example.org')")
    url = url.rstrip("/")
    with httpx.Client(base_url=url, timeout=30.0, verify=ssl_context()) as http:
        started = http.post("/v1/auth/login", json={})
        _raise_for(started)
        start = started.json()
        link = start["authorize_url"]
        _show_link(link, output)
        if open_browser:
            import webbrowser

            webbrowser.open(link)
        interval = max(1, int(start.get("interval") or 2))
        deadline = time.monotonic() + min(timeout, float(start.get("expires_in") or timeout))
        while True:
            response = http.post("/v1/auth/token", json={"grant_type": DEVICE_CODE_GRANT,
                                                         "device_code": start["device_code"]})
            if response.status_code == 400 and response.json().get("code") == "authorization_pending":
                if time.monotonic() > deadline:
                    raise TimeoutError("the login was not completed in time; call lattice.login() again")
                time.sleep(interval)
                continue
            _raise_for(response)
            token = response.json()
            break
    profile = Profile(url=url, access_token=token["access_token"], refresh_token=token.get("refresh_token"),
                      expires_at=expires_at_from(token.get("expires_in", 0)))
    saved_to = profile.save(path)
    output(f"Logged in; token saved to {saved_to}")
    return Client(url, profile_path=path)


def _show_link(link: str, output: Callable[[str], None]) -> None:
    if output is print and "ipykernel" in sys.modules:
        try:
            from IPython.display import HTML, display

            display(HTML(f'Log in to Lattice: <a href="{link}" target="_blank">{link}</a>'))
            return
        except Exception:  # noqa: BLE001 - fall back to text
            pass
    output(f"Open this link to log in to Lattice:\n  {link}")
