"""The saved login the CLI and the SDK share:
``$XDG_CONFIG_HOME/lattice/profile.json`` (else ``~/.config/lattice/``),
``{"url", "access_token", "refresh_token"?, "expires_at"?}``, mode 0600.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Optional

from lattice.errors import NotConfigured


def config_dir() -> Path:
    """The Lattice config dir (honours ``XDG_CONFIG_HOME``, as the CLI does)."""
    base = os.environ.get("XDG_CONFIG_HOME")
    if base:
        return Path(base) / "lattice"
    return Path.home() / ".config" / "lattice"


def default_path() -> Path:
    return config_dir() / "profile.json"


@dataclass
class Profile:
    url: str
    access_token: str
    refresh_token: Optional[str] = None
    expires_at: Optional[str] = None

    @classmethod
    def load(cls, path: Optional[Path] = None) -> Optional["Profile"]:
        """Reads a profile; ``None`` if there is none."""
        path = Path(path) if path else default_path()
        try:
            data: Dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise NotConfigured(f"profile {path}: not a valid profile ({e}); run `lattice login` again") from e
        try:
            return cls(
                url=data["url"],
                access_token=data["access_token"],
                refresh_token=data.get("refresh_token"),
                expires_at=data.get("expires_at"),
            )
        except KeyError as e:
            raise NotConfigured(f"profile {path}: missing {e}; run `lattice login` again") from e

    def save(self, path: Optional[Path] = None) -> Path:
        """Writes the profile atomically, readable by the owner only."""
        path = Path(path) if path else default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        data: Dict[str, Any] = {"url": self.url, "access_token": self.access_token}
        if self.refresh_token:
            data["refresh_token"] = self.refresh_token
        if self.expires_at:
            data["expires_at"] = self.expires_at
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    def expired(self) -> bool:
        if not self.expires_at:
            return False
        # chrono writes up to nanoseconds; fromisoformat takes microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", self.expires_at.replace("Z", "+00:00"))
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return False
        return when <= datetime.now(timezone.utc)


def expires_at_from(expires_in: int) -> str:
    """An RFC 3339 UTC time ``expires_in`` seconds from now (as the CLI writes it)."""
    when = datetime.now(timezone.utc).timestamp() + int(expires_in)
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
