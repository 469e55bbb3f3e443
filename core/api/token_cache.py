"""The token cache: which user is logged in, and a token per user.

The file is ``$XDG_CONFIG_HOME/detlite/auth.json`` (``~/.config/detlite/auth.json`` when the
variable is unset), holding ``{"active_user": "...", "tokens": {"<user>": "<token>"}}`` as
Determined's did. The directory is created with mode 0700 and the file is written atomically
with mode 0600. An unreadable file is removed and ``CorruptTokenCache`` raised, so the next
login starts clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from detlite.errors import CorruptTokenCache

__all__ = ["TokenCache", "default_cache_path"]


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "detlite" / "auth.json"


class TokenCache:
    """The cache file's content; every change is written back at once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_cache_path()
        self.active_user: str | None = None
        self.tokens: dict[str, str] = {}
        self._read()

    def _read(self) -> None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            data = json.loads(text)
            active = data.get("active_user")
            tokens = data.get("tokens", {})
            valid = isinstance(active, str | None) and isinstance(tokens, dict)
            if not valid or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in tokens.items()
            ):
                raise ValueError("unexpected structure")
        except (ValueError, AttributeError) as exc:
            self.path.unlink(missing_ok=True)
            raise CorruptTokenCache(
                f"the token cache {self.path} was corrupt ({exc}) and has been removed; "
                "log in again: detlite user login"
            ) from exc
        self.active_user = active
        self.tokens = dict(tokens)

    def get(self, user: str) -> str | None:
        return self.tokens.get(user)

    def set(self, user: str, token: str, *, activate: bool = True) -> None:
        self.tokens[user] = token
        if activate:
            self.active_user = user
        self._write()

    def drop(self, user: str) -> None:
        """Forget ``user``'s token (and that it is active)."""
        self.tokens.pop(user, None)
        if self.active_user == user:
            self.active_user = None
        self._write()

    def _write(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            # Several CLI processes of a fresh home may get here at once: one makes it.
            directory.mkdir(parents=True, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask
        body = json.dumps({"active_user": self.active_user, "tokens": self.tokens}, indent=2)
        # mkstemp creates the file with mode 0600; os.replace keeps that mode.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".auth-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
