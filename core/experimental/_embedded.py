"""The embedded master: the master app served from this process, for ``create(local=True)``.

``local_master()`` answers the URL of the master that serves the user's local database
(SQLite under ``detlite.master.settings.data_dir()``, checkpoints beside it):

1. a master started by ``detlite up`` (found through its pid file in the data directory), when
   one is running: it is used as it is, and nothing starts here;
2. else this process's embedded master, started on the first call: ``create_app`` under
   uvicorn in a daemon thread on a free loopback port, the database migrated first so that a
   bad one is one clear error. It is started once per process, stopped by ``atexit`` (the
   lifespan stops the scheduler and its workers), and ``DETLITE_MASTER`` is set to its URL so
   that a later ``Determined()`` in this process finds it.

Two masters must never run on one SQLite database: each would schedule the same experiments.
So the embedded master holds an exclusive ``flock`` on the database's lock file
(``<data dir>/master.db.lock``, see ``detlite.master.dblock``) for its whole life, as
``detlite master`` does, and writes its pid and URL into it. A second process that finds the
lock held does not start another; it is refused with ``MasterBusy``, which names the holder and
suggests ``detlite up`` (one master that every process shares). The lock is released by the
kernel when the process ends, even on SIGKILL, so a stale lock never blocks anyone.

Storage: the embedded master allows its own checkpoint directory, as every master does, and
``allow_storage(checkpoint_storage)`` adds the location a config names. ``create(local=True)``
calls it with the experiment's config before submitting it: the embedded master runs in the
user's own process, with the user's own rights, so the user is its operator, and naming a
location in the config passed to ``create`` is how that operator allows it. Only that exact
location is added (its shared_fs ``host_path[/storage_path]``, or its s3 bucket, endpoint
and prefix), and only from this process: nothing over HTTP can add one. A master started by
``detlite up`` is a service with its own operator: it is not changed, and a location it does
not allow is refused with the ``detlite up --allow-shared-fs`` / ``--allow-s3`` hint.

Importing this module imports neither uvicorn nor the master's server stack; starting does.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from detlite.errors import DetliteError, MasterBusy
from detlite.master.dblock import lock_database, lock_path, record_holder, release
from detlite.master.service import master_healthy, master_process_alive, pid_file

if TYPE_CHECKING:
    import uvicorn

    from detlite.master.settings import Settings

__all__ = [
    "EmbeddedMaster",
    "MasterBusy",
    "allow_storage",
    "current_embedded_master",
    "local_master",
    "lock_database",
    "lock_path",
    "start_embedded_master",
    "stop_embedded_master",
]

log = logging.getLogger("detlite.experimental")

#: How long the embedded master may take to migrate the database and start listening.
START_TIMEOUT = 60.0

_guard = threading.Lock()
_current: EmbeddedMaster | None = None


@dataclass
class EmbeddedMaster:
    """A master running in this process: its URL, settings, server and thread."""

    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    lock_fd: int | None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving (requests in flight finish, the lifespan shuts down) and unlock."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        if self.thread.is_alive():
            log.warning("the embedded master did not stop within %.0f s", timeout)
        release(self.lock_fd)
        self.lock_fd = None

    def allow(self, storage: Mapping[str, Any]) -> None:
        """Let this master use the location ``storage`` (a ``checkpoint_storage`` mapping)
        names, from now on (see the module docstring)."""
        from detlite.config.storage import parse_storage_config
        from detlite.errors import StorageNotAllowed
        from detlite.storage.locations import S3Location
        from detlite.storage.shared_fs import storage_root

        config = parse_storage_config(dict(storage))
        try:
            self.settings.storage_locations.check(config)
            return  # allowed already
        except StorageNotAllowed:
            pass
        if config.type == "shared_fs":
            root = storage_root(config.host_path, config.storage_path)
            update: dict[str, Any] = {"storage_roots": (*self.settings.storage_roots, root)}
        else:
            location = S3Location(
                bucket=config.bucket, endpoint_url=config.endpoint_url, prefix=config.prefix
            )
            update = {"s3_locations": (*self.settings.s3_locations, location)}
        self.settings = self.settings.model_copy(update=update)
        # The running app and its scheduler read their settings at every use.
        app: Any = self.server.config.app
        state = getattr(app.state, "master", None)
        if state is not None:
            state.settings = self.settings
        scheduler = getattr(app.state, "scheduler", None)
        if scheduler is not None:
            scheduler.settings = self.settings
        log.info("the embedded master allows checkpoint storage %s too", _shown(config))


def _service_url(wait: float = 30.0) -> str | None:
    """The URL of the master ``detlite up`` started (its pid file in the data directory names
    it), if that process is alive; one still starting is waited for up to ``wait`` s."""
    path = pid_file()
    deadline = time.monotonic() + wait
    while True:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            pid, url = int(info["pid"]), info.get("url")
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no pid file, or one `detlite up` will call stale
        if not master_process_alive(pid):
            return None
        if url and master_healthy(str(url)):
            return str(url)
        if time.monotonic() > deadline:
            raise DetliteError(
                f"the master `detlite up` started (pid {pid}) does not answer"
                f"{' at ' + str(url) if url else ''}; see its log, or restart it with "
                "`detlite down` and `detlite up`"
            )
        time.sleep(0.2)


def start_embedded_master(settings: Settings | None = None) -> EmbeddedMaster:
    """Start a master in this process (``settings`` default: the local database, a free
    loopback port). Use ``local_master()`` unless you need a master of your own."""
    import uvicorn

    from detlite.master.app import create_app
    from detlite.master.server import prepare_database
    from detlite.master.settings import Settings

    settings = settings or Settings(host="127.0.0.1", port=0)
    lock_fd = lock_database(settings.db_url)
    try:
        prepare_database(settings)
        # shared_fs checkpoint storage must exist before the first worker uploads to it.
        settings.storage_path.mkdir(parents=True, exist_ok=True)
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            log_config=None,  # the user's logging setup, not uvicorn's handlers
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="detlite-embedded-master", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive():
                raise DetliteError("the embedded master could not start (its log says why)")
            if time.monotonic() > deadline:
                server.should_exit = True
                raise DetliteError(f"the embedded master did not start within {START_TIMEOUT} s")
            time.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        record_holder(lock_fd, url, "embedded")
    except BaseException:
        release(lock_fd)
        raise
    return EmbeddedMaster(url, settings, server, thread, lock_fd)


def local_master(settings: Settings | None = None) -> str:
    """The URL of the master on the local database: ``detlite up``'s, else this process's
    embedded one (started on the first call, with ``settings`` when given; later calls
    return the same URL)."""
    global _current
    with _guard:
        if _current is not None and _current.thread.is_alive():
            return _current.url
        service = _service_url()
        if service is not None:
            return service
        _current = start_embedded_master(settings)
        atexit.unregister(stop_embedded_master)  # registered once, however often restarted
        atexit.register(stop_embedded_master)
        os.environ["DETLITE_MASTER"] = _current.url
        log.info("embedded master at %s on %s", _current.url, _current.settings.db_url)
        return _current.url


def _shown(config: Any) -> str:
    if config.type == "shared_fs":
        return str(config.host_path) + (f" ({config.storage_path})" if config.storage_path else "")
    return f"s3://{config.bucket} at {config.endpoint_url or 'the AWS default endpoint'}"


def allow_storage(storage: Mapping[str, Any] | None) -> None:
    """Let this process's embedded master use the location a config's ``checkpoint_storage``
    names (``create(local=True)`` calls it: the user is that master's operator). Nothing
    happens without one, or where the local master is ``detlite up``'s."""
    master = _current
    if storage is None or master is None or not master.thread.is_alive():
        return
    master.allow(storage)


def current_embedded_master() -> EmbeddedMaster | None:
    """This process's embedded master, if ``local_master()`` started one that still runs."""
    return _current


def stop_embedded_master() -> None:
    """Stop this process's embedded master, if any (also called at exit)."""
    global _current
    with _guard:
        master, _current = _current, None
    if master is None:
        return
    if os.environ.get("DETLITE_MASTER") == master.url:
        del os.environ["DETLITE_MASTER"]
    master.stop()
