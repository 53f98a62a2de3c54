"""Request and response bodies of the sampling service (they make its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fedsynth.data.conditions import SYNTAX_HELP
from fedsynth.server.service.release_status import ReleaseStatus

MAX_CONDITIONS = 64
MAX_SEED = 2**63 - 1
# The largest valid request (64 conditions of 200 characters) is under 16 KiB.
MAX_BODY_BYTES = 64 * 1024
# Bounds the work of parsing one request and the size of its provenance header.
ConditionText = Annotated[str, StringConstraints(max_length=200)]


class SampleRequest(BaseModel):
    """One cohort: ``n`` rows satisfying every condition, reproducible from ``seed``."""

    # Unknown fields are refused: a misspelt "condition" silently ignored would return an
    # unconditional cohort that looks like the one asked for. Strict types: true, "5" or 5.0
    # for n is a client bug to report, not a number to guess (true would draw 1 row).
    model_config = ConfigDict(extra="forbid", strict=True)

    n: int = Field(..., ge=1, description="rows to draw; at most the server's max_rows_per_request")
    conditions: list[ConditionText] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description=f"conditions every row satisfies, as in `fedsynth sample --where`: {SYNTAX_HELP}",
        examples=[["chf=1", "60<=age<=80"]],
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="same request and seed, same rows")
    format: Literal["csv", "parquet", "json"] = Field(
        "csv", description="csv (streamed), json (JSON lines, streamed) or parquet (one file)"
    )


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(..., description="path of the offending field, e.g. ['body', 'conditions', 0]")
    msg: str = Field(..., description="what is wrong and how to fix it")
    type: str


class ErrorBody(BaseModel):
    detail: list[ErrorItem] | str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model_sha256: str
    differentially_private: bool


class SitePrivacy(BaseModel):
    """One site's spend: each site enforces its own (epsilon, delta) over all its training."""

    site: str
    target_epsilon: float
    epsilon_spent: float
    delta: float
    rounds_trained: int
    within_budget: bool


class Privacy(BaseModel):
    differentially_private: bool
    notice: str
    sites: list[SitePrivacy] = Field(default_factory=list)
    epsilon: float | None = Field(None, description="max over sites: the model's guarantee per patient")
    delta: float | None = Field(None, description="max over sites")
    accountant: str | None = None
    note: str | None = None


class ResultSummary(BaseModel):
    """The worst-site figures of a federated audit or evaluation of this model."""

    time: str | None = None
    complete: bool
    matches_model: bool = Field(..., description="False: the results are of another checkpoint than the one served")
    worst: dict[str, Any] | None = Field(None, description="worst site's figures; None if a site did not answer")
    failures: int = 0
    error: str | None = Field(None, description="why the results file could not be read")


class ModelCard(BaseModel):
    run_id: str | None
    generator: str = Field(..., description="the generator (MCM, Med-VAE); samples come from the model alone")
    model_sha256: str = Field(..., description="SHA-256 of the checkpoint's manifest (pins every model file)")
    weights_sha256: str = Field(..., description="SHA-256 of the weights: how audits and evaluations name the model")
    rounds: int | None
    sites: list[str]
    privacy: Privacy
    audit: ResultSummary | None = Field(None, description="from RUN_DIR/audit.json, if audited")
    evaluation: ResultSummary | None = Field(None, description="from RUN_DIR/evaluation.json, if evaluated")
    max_rows_per_request: int
    release: ReleaseStatus = Field(..., description="the run's release sign-off (RUN_DIR/signoff.json) of this model")
    chunk_rows: int = Field(
        ..., description="most rows per streamed chunk (row group); the split into groups is part of what a seed fixes"
    )
