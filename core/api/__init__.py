"""The HTTP client layer every detlite client is built on (no server code is imported here).

- ``Session``: requests to one master, with typed errors and retries (``detlite.api.session``).
- ``resolve_master``: the master's URL from an argument or the environment.
- ``TokenCache``: ``$XDG_CONFIG_HOME/detlite/auth.json``.
- ``login_session``, ``log_in``, ``log_out``: authentication as in Determined's clients.
- ``ExperimentState``, ``CheckpointState``: the ``STATE_*`` enums shared with the master.
"""

from __future__ import annotations

from detlite.api.address import resolve_master
from detlite.api.authentication import DEFAULT_USER, log_in, log_out, login_session
from detlite.api.enums import CheckpointState, ExperimentState
from detlite.api.session import Session
from detlite.api.token_cache import TokenCache

__all__ = [
    "DEFAULT_USER",
    "CheckpointState",
    "ExperimentState",
    "Session",
    "TokenCache",
    "log_in",
    "log_out",
    "login_session",
    "resolve_master",
]
