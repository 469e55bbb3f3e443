"""Bodies of the web UI's read endpoints (``detlite.master.routers.ui_api``).

``ExperimentSummary`` is an experiment as the list page shows it: the v1 ``Experiment`` plus
its searcher metric and the best value any of its trials validated. ``MetricSeries`` is one
metric of one trial as a chart draws it: batch counts and values side by side, a value being
null where the report had NaN or a non-number. ``GetParetoFrontResponse`` is a
multi-objective search's trials in objective space, the front marked.
"""

from __future__ import annotations

from pydantic import Field

from detlite.master.schemas._values import StoredText
from detlite.master.schemas.base import WireModel
from detlite.master.schemas.common import Pagination
from detlite.master.schemas.experiments import Experiment
from detlite.master.schemas.metrics import MetricsKind

__all__ = [
    "ExperimentSummary",
    "GetExperimentSummariesResponse",
    "GetMetricSeriesResponse",
    "GetParetoFrontResponse",
    "MetricSeries",
    "ParetoObjective",
    "ParetoPoint",
]


class ExperimentSummary(WireModel):
    experiment: Experiment
    searcher_metric: StoredText | None = Field(description="the config's searcher.metric")
    smaller_is_better: bool
    best_metric: float | None = Field(
        description="the best searcher metric of any validation of its trials"
    )
    best_trial_id: int | None


class GetExperimentSummariesResponse(WireModel):
    experiments: list[ExperimentSummary]
    pagination: Pagination


class MetricSeries(WireModel):
    trial_id: int
    kind: MetricsKind
    metric: StoredText
    steps: list[int]
    values: list[float | None]


class GetMetricSeriesResponse(WireModel):
    """Every numeric metric of every trial asked for, ordered by trial id then metric name."""

    series: list[MetricSeries]
    metrics: list[StoredText] = Field(description="the metric names that appear, sorted")


class ParetoObjective(WireModel):
    metric: StoredText
    smaller_is_better: bool


class ParetoPoint(WireModel):
    trial_id: int
    state: StoredText
    batches: int = Field(description="the batch count of the trial's latest validation")
    values: list[float] = Field(description="that validation's objectives, in their order")
    on_front: bool = Field(description="no other trial's point dominates this one")


class GetParetoFrontResponse(WireModel):
    """The search's objectives (none for a single-objective search) and each trial whose
    latest validation holds a finite value of every one, ordered by trial id."""

    objectives: list[ParetoObjective]
    points: list[ParetoPoint]
