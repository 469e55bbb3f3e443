"""The model registry: ``/api/v1/models[/{name}[/versions[/{version}]]]``.

Paths and bodies follow Determined's modelv1 routes; delete routes, labels, notes and version
metadata are API.md improvement 14. Listings answer with and without a trailing slash (the
reference client added one). ``sort_by`` and ``order_by`` take the proto number or the name
(``SORT_BY_NAME``/``NAME``, ``ORDER_BY_DESC``/``DESC``); unknown values are a 400 listing the
accepted ones. Anyone logged in may read; changes need the model's owner or an admin.
Registering a checkpoint as a version needs, besides, its experiment's owner or an admin
(403 otherwise): a registered checkpoint keeps its experiment from being deleted, so only
those who may delete the experiment may register its checkpoints (the rule and what it
means for deleting the experiment are in ``detlite.master.queries.models``).

Version numbers are ``max + 1`` (``detlite.master.queries.models`` says how that stays safe
when registrations race), so deleting the highest version frees its number again; a number
below it is never reused. Never reusing any would need a counter column on ``models``.
"""

from __future__ import annotations

import enum
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query

from detlite.errors import APIError
from detlite.master._bodies import BodyOffLoopRoute
from detlite.master.deps import CurrentUser, DbSession
from detlite.master.queries import models as queries
from detlite.master.schemas._values import MAX_QUERY_ITEMS, PathText, QueryItem
from detlite.master.schemas.common import OrderBy, parse_enum
from detlite.master.schemas.models import (
    DeleteModelResponse,
    DeleteModelVersionResponse,
    GetModelResponse,
    GetModelsResponse,
    GetModelVersionResponse,
    GetModelVersionsResponse,
    ModelSortBy,
    PatchModelRequest,
    PatchModelVersionRequest,
    PostModelRequest,
    PostModelVersionRequest,
    VersionSortBy,
    check_model_name,
    check_text,
)

__all__ = ["router"]

router = APIRouter(route_class=BodyOffLoopRoute, prefix="/api/v1/models", tags=["models"])

_E = TypeVar("_E", bound=enum.IntEnum)

# Bounded so that no number overflows the databases' integers (a 400, not a 500).
_INT_MAX = 2**31 - 1
EnumParam = Annotated[str, Query(description="proto number or name")]
Offset = Annotated[
    int, Query(ge=-_INT_MAX, le=_INT_MAX, description="rows to skip; negative counts from the end")
]
Limit = Annotated[int, Query(ge=0, le=_INT_MAX, description="rows to return; 0 for all")]
Version = Annotated[int, Path(ge=0, le=_INT_MAX, description="the version number")]
Filter = Annotated[str, Query(max_length=1024, description="case-insensitive substring")]


def _enum(cls: type[_E], value: str, parameter: str, prefix: str) -> _E:
    try:
        return parse_enum(cls, value, prefix)
    except ValueError as exc:
        raise APIError(f"invalid {parameter}: {exc}", status=400) from exc


def _order(value: str) -> OrderBy:
    order = _enum(OrderBy, value, "order_by", "ORDER_BY_")
    return OrderBy.ASC if order is OrderBy.UNSPECIFIED else order


@router.get("", summary="List models")
@router.get("/", include_in_schema=False)
def get_models(
    db: DbSession,
    sort_by: EnumParam = "0",
    order_by: EnumParam = "0",
    name: Filter = "",
    description: Filter = "",
    labels: Annotated[
        list[QueryItem] | None,
        Query(max_length=MAX_QUERY_ITEMS, description="models with all of these"),
    ] = None,
    offset: Offset = 0,
    limit: Limit = 0,
) -> GetModelsResponse:
    """Models whose name and description contain the given text (any case), with all
    ``labels``; sorted by last-updated time unless ``sort_by`` says otherwise."""
    for text in (name, description, *(labels or ())):
        try:
            check_text(text)
        except ValueError as exc:
            raise APIError(f"invalid filter: {exc}", status=400) from exc
    rows, pagination = queries.list_models(
        db,
        sort_by=_enum(ModelSortBy, sort_by, "sort_by", "SORT_BY_"),
        order_by=_order(order_by),
        name=name,
        description=description,
        labels=labels or (),
        offset=offset,
        limit=limit,
    )
    return GetModelsResponse(models=queries.models_wire(db, rows), pagination=pagination)


@router.post("/{name}")
def post_model(
    name: PathText, db: DbSession, user: CurrentUser, body: PostModelRequest | None = None
) -> GetModelResponse:
    """Create a model owned by the caller (the body may be left out); 409 if the name is
    taken."""
    body = body or PostModelRequest()
    try:
        check_model_name(name)
    except ValueError as exc:
        raise APIError(f"invalid model name: {exc}", status=400) from exc
    if body.name is not None and body.name != name:
        raise APIError(
            f"the body names model {body.name!r} but the path names {name!r}", status=400
        )
    model = queries.create_model(
        db,
        user,
        name,
        description=body.description,
        metadata=body.metadata,
        labels=body.labels,
        notes=body.notes,
    )
    db.commit()
    return GetModelResponse(model=queries.model_wire(db, model))


@router.get("/{name}")
def get_model(name: PathText, db: DbSession) -> GetModelResponse:
    return GetModelResponse(model=queries.model_wire(db, queries.require_model(db, name)))


@router.patch("/{name}")
def patch_model(
    name: PathText, db: DbSession, user: CurrentUser, body: PatchModelRequest
) -> GetModelResponse:
    """Replace the fields given (owner or admin); bumps ``lastUpdatedTime``."""
    model = queries.require_model(db, name)
    queries.check_can_modify(user, model)
    patch = body.model
    queries.update_model(
        db,
        model,
        description=patch.description,
        metadata=patch.metadata,
        labels=patch.labels,
        notes=patch.notes,
    )
    db.commit()
    return GetModelResponse(model=queries.model_wire(db, model))


@router.delete("/{name}")
def delete_model(name: PathText, db: DbSession, user: CurrentUser) -> DeleteModelResponse:
    """Delete a model and its versions (owner or admin); the checkpoints stay."""
    model = queries.require_model(db, name)
    queries.check_can_modify(user, model)
    queries.delete_model(db, model)
    db.commit()
    return DeleteModelResponse()


@router.post("/{name}/versions")
@router.post("/{name}/versions/", include_in_schema=False)
def post_model_version(
    name: PathText, db: DbSession, user: CurrentUser, body: PostModelVersionRequest
) -> GetModelVersionResponse:
    """Register a COMPLETED checkpoint as the model's next version: the model's owner or an
    admin, who must also own the checkpoint's experiment or be an admin."""
    model = queries.require_model(db, name)
    queries.check_can_modify(user, model)
    row = queries.register_version(
        db,
        user,
        model,
        body.checkpoint_uuid,
        name=body.name,
        comment=body.comment,
        labels=body.labels,
        notes=body.notes,
        metadata=body.metadata,
    )
    db.commit()
    return GetModelVersionResponse(model_version=queries.version_wire(db, row))


@router.get("/{name}/versions", summary="List a model's versions")
@router.get("/{name}/versions/", include_in_schema=False)
def get_model_versions(
    name: PathText,
    db: DbSession,
    sort_by: EnumParam = "0",
    order_by: EnumParam = "0",
    offset: Offset = 0,
    limit: Limit = 0,
) -> GetModelVersionsResponse:
    """The model and its versions, by version number unless ``sort_by`` says otherwise."""
    model = queries.require_model(db, name)
    rows, pagination = queries.list_versions(
        db,
        model,
        sort_by=_enum(VersionSortBy, sort_by, "sort_by", "SORT_BY_"),
        order_by=_order(order_by),
        offset=offset,
        limit=limit,
    )
    model_json = queries.model_wire(db, model)
    return GetModelVersionsResponse(
        model=model_json,
        model_versions=queries.versions_wire(db, rows, model_json),
        pagination=pagination,
    )


@router.get("/{name}/versions/{version}")
def get_model_version(name: PathText, version: Version, db: DbSession) -> GetModelVersionResponse:
    model = queries.require_model(db, name)
    row = queries.require_version(db, model, version)
    return GetModelVersionResponse(model_version=queries.version_wire(db, row))


@router.patch("/{name}/versions/{version}")
def patch_model_version(
    name: PathText,
    version: Version,
    db: DbSession,
    user: CurrentUser,
    body: PatchModelVersionRequest,
) -> GetModelVersionResponse:
    """Replace the version's fields given (owner or admin of the model)."""
    model = queries.require_model(db, name)
    queries.check_can_modify(user, model)
    row = queries.require_version(db, model, version)
    patch = body.model_version
    queries.update_version(
        db,
        row,
        name=patch.name,
        comment=patch.comment,
        notes=patch.notes,
        labels=patch.labels,
        metadata=patch.metadata,
    )
    db.commit()
    return GetModelVersionResponse(model_version=queries.version_wire(db, row))


@router.delete("/{name}/versions/{version}")
def delete_model_version(
    name: PathText, version: Version, db: DbSession, user: CurrentUser
) -> DeleteModelVersionResponse:
    """Delete one version (owner or admin of the model); its checkpoint stays.

    Numbers are ``max + 1``, so deleting the highest version frees its number again."""
    model = queries.require_model(db, name)
    queries.check_can_modify(user, model)
    queries.delete_version(db, queries.require_version(db, model, version))
    db.commit()
    return DeleteModelVersionResponse()
