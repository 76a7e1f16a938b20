"""The ASGI application: routes, access control, rate limit and the shape of every error.

Every /v1/ request needs `Authorization: Bearer <key>` (401 with no detail otherwise) and
passes a per-key rate limit (429 with Retry-After). `/healthz`, `/readyz`, `/metrics` and the
OpenAPI document need no key: probes, Prometheus and clients read them. Errors are JSON
`{error, fields: [{field, rule}]}`, and bad input is always a 4xx: 400 malformed JSON, 413 too
large, 415 not JSON, 422 a field breaks a rule. Keys are never logged or echoed, nor is
request input."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia_assets.api.keys import ApiKeys, bearer
from sophia_assets.api.models import (
    MAX_TEXT_CHARS,
    DocumentResponse,
    ErrorResponse,
    Health,
    Readiness,
    SearchRequest,
    SearchResponse,
)
from sophia_assets.api.ratelimit import RateLimiter, retry_after
from sophia_assets.api.service import SearchService
from sophia_assets.metrics.api import ApiMetrics, Instrumented

log = logging.getLogger("sophia.api")
MAX_BODY_BYTES = 64 * 1024
PUBLIC = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
ERRORS = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "Malformed JSON.",
        401: "No valid API key.",
        413: "The body or the text is too large.",
        415: "The body is not application/json.",
        422: "A field breaks a rule.",
        429: "Over the key's rate limit; see Retry-After.",
    }.items()
}


def create_app(
    service: SearchService,
    keys: ApiKeys,
    limiter: RateLimiter,
    metrics: ApiMetrics | None = None,
) -> FastAPI:
    """`metrics` (GET /metrics, no key) defaults to a registry of the application's own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.warm_up()
        yield
        service.close()

    app = FastAPI(
        title="sophia search API",
        version="1",
        description="Semantic search over the platform's vector index.",
        lifespan=lifespan,
        redoc_url=None,
    )

    app.add_middleware(Guard, keys=keys, limiter=limiter)
    # Added last, so outermost: refusals by the guard are counted and timed too.
    app.add_middleware(Instrumented, metrics=metrics or ApiMetrics(), routes=app.router.routes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = exc.errors()
        if any(p.get("type") == "json_invalid" for p in problems):
            return error(400, "malformed JSON", "body", "must be a JSON object")
        fields = [
            {"field": ".".join(str(p) for p in p_["loc"][1:]) or "body", "rule": p_["msg"]}
            for p_ in problems
        ]
        if any(p.get("type") == "string_too_long" and p["loc"][1:] == ("text",) for p in problems):
            return error(413, "text too large", "text", f"at most {MAX_TEXT_CHARS} characters")
        return JSONResponse({"error": "invalid request", "fields": fields}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception):
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return error(500, "internal error")

    @app.get("/healthz", response_model=Health, tags=["probes"])
    async def healthz() -> Health:
        """The process is up."""
        return Health()

    @app.get("/readyz", response_model=Readiness, tags=["probes"], responses={503: {}})
    async def readyz():
        """Model loaded, index reachable, index lag under the threshold: each check named."""
        readiness = await service.readiness()
        return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)

    @app.post("/v1/search", response_model=SearchResponse, tags=["search"], responses=ERRORS)
    async def search(body: SearchRequest) -> Response:
        """The documents nearest to `text`: the best chunk of each, best first."""
        # Serialised by pydantic directly: FastAPI would validate the model it was just given
        # again and walk it through jsonable_encoder, a measurable share of a search's CPU.
        found = await service.search(body)
        return Response(found.model_dump_json(), media_type="application/json")

    @app.get(
        "/v1/documents/{source_key}",
        response_model=DocumentResponse,
        tags=["documents"],
        responses={**ERRORS, 404: {"model": ErrorResponse, "description": "No such document."}},
    )
    async def document(source_key: str) -> DocumentResponse:
        """The current document from the collection's reduced view, and its vector ids."""
        found = await service.document(source_key)
        if found is None:
            raise HTTPException(404, f"no document with key {source_key!r}")
        return found

    return app


class Guard:
    """Key, rate limit, media type and size, checked before a /v1/ request reaches its route.

    A plain ASGI middleware: Starlette's `@app.middleware("http")` wraps every request in
    extra tasks and streams, which cost a noticeable share of a search's CPU here."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, limiter: RateLimiter):
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = None
        if scope["type"] == "http" and scope["path"] not in PUBLIC:
            refusal = self.refusal(scope["method"], Headers(scope=scope))
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> JSONResponse | None:
        key_id = self.keys.identify(bearer(headers.get("authorization")))
        if key_id is None:
            return error(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
        wait = self.limiter.take(key_id)
        if wait:
            return error(429, "rate limit exceeded", headers={"Retry-After": retry_after(wait)})
        if method == "POST":
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if media != "application/json":
                return error(415, "unsupported media type", "Content-Type", "application/json")
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                return error(413, "body too large", "body", f"at most {MAX_BODY_BYTES} bytes")
        return None


def error(
    status: int,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    fields = [{"field": field, "rule": rule}] if field else []
    return JSONResponse({"error": message, "fields": fields}, status_code=status, headers=headers)
