"""The sampling service's FastAPI app: routes, authentication, error bodies and headers.

Routes: ``POST /v1/sample`` and ``GET /v1/model`` need a bearer token; ``GET /v1/schema``
(the public schema), ``GET /healthz`` and the OpenAPI document (``/openapi.json``, and
``/docs``, a self-contained page: nothing is loaded from a CDN) do not. Every answer is
computed from the served model alone. A sample request's body is read only once its token is
accepted, and validated strictly (``{"n": true}`` is an error, not one row).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from fedsynth import __version__
from fedsynth.model.provenance import provenance
from fedsynth.server.service.access_log import AccessLog, AccessLogMiddleware, RowCounter
from fedsynth.server.service.auth import TokenFileError, TokenStore
from fedsynth.server.service.card import model_card
from fedsynth.server.service.config import ServiceConfig
from fedsynth.server.service.docs import CONTENT_SECURITY_POLICY, docs_page
from fedsynth.server.service.models import MAX_BODY_BYTES, ErrorBody, Health, ModelCard, SampleRequest
from fedsynth.server.service.release_status import release_status
from fedsynth.server.service.sampling import (
    MEDIA_TYPES,
    SUFFIXES,
    ConditionProblem,
    encode_parquet,
    encode_text,
    resolve_indexed,
    sample_chunks,
)
from fedsynth.server.service.served import ServedModel, ServiceStartError

SAMPLE_FIELDS = ", ".join(SampleRequest.model_fields)
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no bearer token"},
    403: {"model": ErrorBody, "description": "unknown, revoked or expired token"},
}


class RequestProblem(Exception):
    """A request the service cannot answer; becomes a 422 (or ``status``) naming the field."""

    def __init__(self, loc: list[str | int], msg: str, kind: str, status: int = 422) -> None:
        self.loc, self.msg, self.kind, self.status = loc, msg, kind, status
        super().__init__(msg)


class AuthProblem(Exception):
    """401/403/503 from authentication: a plain ``detail`` string, as clients of bearer APIs expect."""

    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail
        super().__init__(detail)


# What to send instead, by pydantic error type (strict types refuse what lax ones would coerce).
_HINTS = {
    "int_type": "; send a JSON integer: no quotes, no decimal point, not true/false",
    "string_type": "; send a JSON string",
    "list_type": "; send a JSON list of strings",
    "model_type": '; send a JSON object such as {"n": 100}',
}


def _validation_message(error: dict[str, Any]) -> str:
    """Pydantic's message, completed with the field and what to send instead."""
    name = error["loc"][-1] if error["loc"] else "body"
    if error["type"] == "missing":
        return f"field '{name}' is required"
    if error["type"] == "extra_forbidden":
        return f"unknown field '{name}'; a sample request takes {SAMPLE_FIELDS}"
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', error['msg'])}); send a JSON object"
    given = repr(error.get("input"))
    given = given if len(given) <= 80 else given[:77] + "..."
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"][1:]).lstrip(".")
    where = f"field '{field}': " if field else ""
    return f"{where}{error['msg']} (got {given}){_HINTS.get(error['type'], '')}"


def _provenance_headers(served: ServedModel, privacy_epsilon: float | None) -> dict[str, str]:
    headers = {
        "X-Fedsynth-Model-SHA256": served.sha256,
        "X-Fedsynth-Differentially-Private": str(served.differentially_private).lower(),
        "X-Fedsynth-Notice": served.notice,
    }
    # An epsilon beside a non-DP model would read as a guarantee it does not have.
    if privacy_epsilon is not None and served.differentially_private:
        headers["X-Fedsynth-Epsilon"] = f"{privacy_epsilon:.6g}"
    return headers


@dataclass(frozen=True)
class ServiceState:
    """What the routes share, kept on ``app.state.service`` (one app per served run)."""

    served: ServedModel
    settings: ServiceConfig
    tokens: TokenStore
    limiter: threading.BoundedSemaphore
    headers: dict[str, str]


def _service(request: Request) -> ServiceState:
    return request.app.state.service


BEARER = HTTPBearer(auto_error=False, description="a token issued with `fedsynth serve-token add`")


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> str:
    """The token holder's name; 401 without a token, 403 for one not in the tokens file."""
    if credentials is None:
        request.state.auth = "no token"
        raise AuthProblem(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    try:
        holder = _service(request).tokens.holder(credentials.credentials)
    except TokenFileError as exc:
        # The detail (a server path) goes to the operator's log, not to the client.
        request.state.auth, request.state.error = "tokens file unusable", str(exc)
        raise AuthProblem(503, "the service cannot check tokens now; tell its operator") from None
    if holder is None:
        request.state.auth = "unknown token"
        raise AuthProblem(403, "unknown or revoked token; ask the coordinator for a token")
    if holder.expired:
        request.state.auth, request.state.who = "expired token", holder.name
        raise AuthProblem(403, f"token expired at {holder.expires}; ask the coordinator for a new one")
    request.state.who = holder.name
    return holder.name


Caller = Annotated[str, Depends(require_token)]
router = APIRouter()


async def sample_request(request: Request, who: Caller) -> SampleRequest:
    """The sample request's body, read and validated only once the caller's token is accepted.

    A body declared on the route would be read and parsed before any dependency runs: an
    unauthenticated client would get 422s describing the API, and the server would read
    whatever it sent. Here it gets 401 whatever its body, and no body is read past
    ``MAX_BODY_BYTES``.
    """
    declared = request.headers.get("content-length", "")
    too_large = RequestProblem(
        ["body"], f"the body exceeds {MAX_BODY_BYTES} bytes; a sample request is a small JSON object", "too_large", 413
    )
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > MAX_BODY_BYTES:
            raise too_large
    try:
        return SampleRequest.model_validate_json(bytes(raw))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


# The body is read by ``sample_request``, so its schema is declared here for the OpenAPI document.
_SAMPLE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SampleRequest.model_json_schema()}},
    }
}


@router.get("/healthz", response_model=Health, tags=["service"])
async def healthz(request: Request) -> Health:
    """Liveness: the model is loaded; no token needed."""
    served = _service(request).served
    return Health(model_sha256=served.sha256, differentially_private=served.differentially_private)


@router.get("/v1/schema", tags=["model"])
async def schema(request: Request) -> dict[str, Any]:
    """The public schema the model was trained for: columns, kinds, bounds, categories (no token needed)."""
    schema = _service(request).served.model.schema_
    assert schema is not None  # a loaded model always has its schema
    return schema.to_dict()


@router.get("/v1/model", response_model=ModelCard, responses=ERRORS, tags=["model"])
def card(request: Request, who: Caller) -> ModelCard:
    """The model card: rounds, sites, privacy spent per site, checkpoint hash, audit and evaluation."""
    service = _service(request)
    return model_card(service.served, service.settings.max_rows_per_request)


@router.post(
    "/v1/sample",
    responses={
        **ERRORS,
        422: {"model": ErrorBody, "description": "invalid request; each item names the field and the fix"},
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}, "description": "the synthetic rows"},
    },
    response_class=Response,
    tags=["sample"],
    openapi_extra=_SAMPLE_BODY,
)
def sample(request: Request, body: Annotated[SampleRequest, Depends(sample_request)]) -> Response:
    """Draw ``n`` rows, every one satisfying every condition; csv and json (lines) are streamed.

    The same request and seed always give the same rows: those ``fedsynth sample --seed``
    writes for the same model, n and conditions.
    """
    service = _service(request)
    served, cap = service.served, service.settings.max_rows_per_request
    request.state.n, request.state.seed, request.state.format = body.n, body.seed, body.format
    request.state.conditions = body.conditions
    if body.n > cap:
        raise RequestProblem(
            ["body", "n"],
            f"n={body.n} exceeds this server's cap of {cap} rows per request (max_rows_per_request); "
            f"ask for at most {cap} rows, or draw a larger cohort as several requests with different seeds",
            "row_cap",
        )
    try:
        resolved = resolve_indexed(served.model, body.conditions)
    except ConditionProblem as exc:
        raise RequestProblem(["body", "conditions", exc.index], str(exc), "condition") from None
    record = provenance(
        "model-sample",
        served.differentially_private,
        model_sha256=served.sha256,
        n=body.n,
        seed=body.seed,
        conditions=body.conditions,
    )
    headers = {
        **service.headers,
        "X-Fedsynth-Rows": str(body.n),
        "X-Fedsynth-Seed": str(body.seed),
        # ASCII-only JSON: any condition text survives as a header.
        "X-Fedsynth-Provenance": json.dumps(record, ensure_ascii=True, separators=(",", ":")),
        "Content-Disposition": f'attachment; filename="fedsynth-seed{body.seed}.{SUFFIXES[body.format]}"',
    }
    # The access log reads the counter: a line before the first row leaves, rows sent at the end.
    request.state.rows = RowCounter()
    chunks = sample_chunks(served.model, resolved, body.n, body.seed, service.limiter, request.state.rows)
    media_type = MEDIA_TYPES[body.format]
    if body.format == "parquet":
        return Response(encode_parquet(chunks, record), media_type=media_type, headers=headers)
    return StreamingResponse(encode_text(chunks, body.format), media_type=media_type, headers=headers)


def create_app(run_dir: str | Path, settings: ServiceConfig | None = None) -> FastAPI:
    """Build the service for ``RUN_DIR``'s global model; refuses to build one that must not serve.

    Raises ``ServiceStartError`` without a tokens file or for a non-DP model (unless
    ``settings.allow_non_dp``), ``TokenFileError`` for an unusable tokens file, and
    ``ModelFileError`` for a model that fails its hash check.
    """
    settings = settings or ServiceConfig()
    if settings.tokens is None:
        raise ServiceStartError(
            "no tokens file: pass --tokens FILE (or tokens = in the config); "
            "issue a token with `fedsynth serve-token add FILE --name NAME`"
        )
    served = ServedModel.load(run_dir, settings.allow_non_dp)
    status = release_status(served.run_dir, served.sha256)
    if not status.signed and not settings.allow_unsigned:
        raise ServiceStartError(
            f"{status.problem}. A model is served only after its release sign-off passes; "
            "pass --allow-unsigned (allow_unsigned = true) to serve it anyway, recorded in the access log"
        )
    tokens = TokenStore(settings.tokens)
    log = AccessLog(settings.access_log_path(served.run_dir))
    if not status.signed:
        log.write({"event": "unsigned-model-served", "model_sha256": served.sha256, "reason": status.problem,
                   "time": datetime.now(UTC).isoformat(timespec="seconds")})  # fmt: skip
    # The spend is fixed once training has ended: read once for the headers (the card re-reads).
    epsilon = model_card(served, settings.max_rows_per_request).privacy.epsilon
    app = FastAPI(
        title="fedsynth sampling service",
        version=__version__,
        description=(
            "Synthetic survival cohorts drawn from a federated run's global model alone. "
            f"{served.notice} Authenticate with `Authorization: Bearer <token>`."
        ),
        # FastAPI's Swagger/ReDoc pages load scripts from a CDN; /docs is served below instead.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.service = ServiceState(
        served=served,
        settings=settings,
        tokens=tokens,
        limiter=threading.BoundedSemaphore(settings.max_concurrent_chunks),
        headers=_provenance_headers(served, epsilon),
    )
    app.include_router(router)
    page = docs_page(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    app.add_middleware(AccessLogMiddleware, log=log)
    app.add_exception_handler(AuthProblem, _auth_problem)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(RequestProblem, _problem)
    return app


async def _auth_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthProblem)
    extra = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=extra)


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e["loc"]), "msg": _validation_message(e), "type": e["type"]} for e in exc.errors()]
    request.state.error = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
    return JSONResponse({"detail": detail}, status_code=422)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestProblem)
    request.state.error = f"{'.'.join(map(str, exc.loc))}: {exc.msg}"
    return JSONResponse({"detail": [{"loc": exc.loc, "msg": exc.msg, "type": exc.kind}]}, status_code=exc.status)
