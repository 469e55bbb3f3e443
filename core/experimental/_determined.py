"""``Determined``: the entry point of the client API (determined-api.md 1.5, 1.10, 6.1).

``Determined(master=None, user=None)`` resolves the master (the argument, else
``DETLITE_MASTER``, ``DET_MASTER``, ``DET_MASTER_ADDR``, else ``localhost:8080``) and logs in
through ``detlite.api.login_session``: a cached token of the user if the master still takes
it, else a fresh login (the default user ``determined`` has an empty password, so local use
asks for nothing). Decisions:

- ``get_experiment`` and ``get_trial`` build references without a request, as the reference
  did; a missing id surfaces as ``NotFound`` on first use.
- ``create_model``/``get_model``/``get_models`` are the registry functions of
  ``detlite.experimental._model`` bound to this session.
- ``get_experiments`` (new) lists experiments the way ``GET /api/v1/experiments`` filters them.
- ``create_experiment`` (0.15) validates the config here first, so every bad field is
  reported before the context is packed, then sends the config (as YAML) with the context
  directory's files (``.detignore`` honoured, at most 95 MiB, as ``create()`` packs it).
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detlite.api import ExperimentState, Session, login_session
from detlite.experimental import _model
from detlite.experimental._checkpoint import Checkpoint
from detlite.experimental._experiment import ExperimentReference
from detlite.experimental._model import Model, ModelOrderBy, ModelSortBy
from detlite.experimental._trial import TrialReference

__all__ = ["Determined", "pack_context"]


class Determined:
    """A logged-in connection to a master; ``_session`` is its ``detlite.api.Session``."""

    def __init__(self, master: str | None = None, user: str | None = None) -> None:
        self._session: Session = login_session(master, user)

    def __repr__(self) -> str:
        return f"Determined(master={self._session.master!r}, user={self._session.user!r})"

    @property
    def master(self) -> str:
        """The master's base URL, e.g. ``http://localhost:8080``."""
        return self._session.master

    @property
    def user(self) -> str | None:
        return self._session.user

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Determined:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- experiments, trials, checkpoints -----------------------------------------------------

    def get_experiment(self, experiment_id: int) -> ExperimentReference:
        return ExperimentReference(experiment_id, self._session)

    def get_trial(self, trial_id: int) -> TrialReference:
        return TrialReference(trial_id, self._session)

    def get_checkpoint(self, uuid: str) -> Checkpoint:
        """The checkpoint ``uuid`` (``NotFound`` if the master has none)."""
        answer = self._session.get("/api/v1/checkpoints/" + urllib.parse.quote(uuid, safe=""))
        return Checkpoint.from_json(answer["checkpoint"], self._session)

    def get_experiments(
        self,
        *,
        states: Sequence[ExperimentState | str] | None = None,
        archived: bool | None = None,
        users: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        description: str = "",
        limit: int = 0,
        offset: int = 0,
    ) -> list[ExperimentReference]:
        """Experiments the master lists, newest first, filtered as given."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if states:
            params["states"] = [ExperimentState.parse(s).value for s in states]
        if archived is not None:
            params["archived"] = "true" if archived else "false"
        if users:
            params["users"] = list(users)
        if labels:
            params["labels"] = list(labels)
        if description:
            params["description"] = description
        answer = self._session.get("/api/v1/experiments", params=params)
        return [ExperimentReference(int(e["id"]), self._session) for e in answer["experiments"]]

    def create_experiment(
        self,
        config: str | Path | Mapping[str, Any],
        model_dir: str | os.PathLike[str],
        *,
        activate: bool = True,
    ) -> ExperimentReference:
        """Submit an experiment: ``config`` (a YAML file's path, or a mapping) and the
        context directory ``model_dir``. Returns a reference to the new experiment, which
        is ACTIVE, or PAUSED with ``activate=False`` (new)."""
        import yaml

        from detlite.config import load_config
        from detlite.config.loader import parse_config_yaml

        if isinstance(config, str | Path):
            path = Path(config)
            # The one YAML reader of every config (``1e-4`` is a number, as in YAML 1.2).
            raw: Any = parse_config_yaml(path.read_text(encoding="utf-8"), source=str(path))
        else:
            raw = dict(config)
        load_config(raw)  # raises InvalidExperimentConfig listing every problem
        body = {
            "config": yaml.safe_dump(raw, sort_keys=False),
            "modelDefinition": pack_context(model_dir),
            "activate": activate,
        }
        answer = self._session.post("/api/v1/experiments", json=body)
        return ExperimentReference(int(answer["experiment"]["id"]), self._session)

    # -- the model registry -------------------------------------------------------------------

    def create_model(
        self, name: str, description: str = "", metadata: dict[str, Any] | None = None
    ) -> Model:
        """Create a model owned by this user; ``Conflict`` if the name is taken."""
        return _model.create_model(self._session, name, description, metadata)

    def get_model(self, name: str) -> Model:
        """The model called ``name``; ``NotFound`` if there is none."""
        return _model.get_model(self._session, name)

    def get_models(
        self,
        sort_by: ModelSortBy = ModelSortBy.NAME,
        order_by: ModelOrderBy = ModelOrderBy.ASCENDING,
        name: str = "",
        description: str = "",
    ) -> list[Model]:
        """Models whose name and description contain the given text (any case)."""
        return _model.get_models(self._session, sort_by, order_by, name, description)


def pack_context(model_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The context directory's files as the v1 API's ``File`` objects (content in base64)."""
    from detlite.context import MAX_CONTEXT_SIZE, iter_context_files
    from detlite.errors import InvalidExperiment

    files: list[dict[str, Any]] = []
    total = 0
    for rel, src in iter_context_files(model_dir):
        if src.is_symlink() and not src.exists():
            continue  # a dangling link has nothing to send
        data = src.read_bytes()
        total += len(data)
        if total > MAX_CONTEXT_SIZE:
            raise InvalidExperiment(
                f"the context directory {model_dir} holds more than "
                f"{MAX_CONTEXT_SIZE // 2**20} MiB of files; list large files (data, "
                "checkpoints) in its .detignore"
            )
        stat = src.stat()
        files.append(
            {
                "path": rel,
                "type": "file",
                "content": base64.b64encode(data).decode("ascii"),
                "mtime": int(stat.st_mtime),
                "mode": stat.st_mode & 0o777,
            }
        )
    return files
