"""The FastAPI application: model loaded and warmed once at start-up, everything under /v1."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api import calibration, predict, reports, search, sessions, stream, uploads
from api.auth import Gate
from api.batcher import Overloaded, TimedOut
from api.limits import BodyLimit
from api.references import References
from api.runtime import Runtime, load_runtime
from api.schemas import Health, Problem
from api.security import DeniedAudit, HostCheck, audit_denied, require_identity
from api.settings import Settings
from core.storage.store import StoreBusy

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and part headers around the clip

DESCRIPTION = """Speech emotion (emotion2vec+, 9 labels) for clips and live conversations.

* `POST /v1/predict` — one clip → emotion, confidence, 9 scores, fallback action and the
  suggested response; per channel for stereo.
* `WS /v1/stream` — live 16 kHz PCM16 (or Opus) in, an update every 0.5 s out: curve, label,
  rolling volatility over the last 5 utterances, alerts; a summary at the end, and with
  `store=true` a job that stores it. WebSockets do not appear in OpenAPI; the protocol is in
  docs/api.md.
* Stored sessions, each read through the caller's scope and recorded in the audit:
  `POST /v1/sessions` (upload → job), `GET /v1/jobs/{id}`, `GET /v1/sessions`,
  `GET /v1/sessions/{id}`, `GET /v1/sessions/{id}/audio`, `GET /v1/segments/{id}/similar`,
  `GET /v1/search` (moments by what was said), `GET /v1/reports`.

Authentication: `Authorization: Bearer <API key or OIDC token>`. Until an identity provider or
an API key is configured, the API serves loopback clients only, without credentials; once one
has been, a missing, empty or broken keys file (or the last key revoked) closes it (401) rather
than opening it. The API answers to loopback host names only (plus `[server] allowed_hosts` once
authentication is configured) and refuses state-changing requests from other sites' pages."""


def create_app(settings: Settings = Settings(), runtime: Runtime | None = None) -> FastAPI:
    """The app for `settings`; `runtime` (an already loaded model) skips loading."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = runtime or await run_in_threadpool(load_runtime, settings)
        rt.state = "ready"
        await rt.batcher.start()
        app.state.runtime = rt
        try:
            yield
        finally:
            rt.state = "draining"
            await rt.batcher.close()

    app = FastAPI(title="Emoscope API", version="1", description=DESCRIPTION,
                  lifespan=lifespan, docs_url="/docs", redoc_url=None,
                  openapi_url="/v1/openapi.json",
                  # Any body route may meet a body it cannot parse (a broken multipart form).
                  responses={400: {"model": Problem, "description": "Malformed request body"}})
    app.state.settings = settings
    app.state.runtime = None
    # A broken emoscope.toml stops here; broken later, the gate closes.
    app.state.gate = Gate(settings.rules, settings.db, settings.open_loopback)
    app.state.denied = DeniedAudit(settings.db)
    app.state.references = References(settings.db, settings.reference_refresh_s)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + MULTIPART_OVERHEAD,
                       shown=f"{settings.max_upload_mb:g} MiB", routes={
                           ("POST", "/v1/sessions"): (
                               settings.max_session_bytes + MULTIPART_OVERHEAD,
                               f"{settings.max_session_mb:g} MiB")})
    app.add_middleware(HostCheck)  # outermost: a foreign Host or Origin gets nothing further

    health = APIRouter(prefix="/v1/health", tags=["health"])

    @health.get("/live", response_model=Health, response_model_exclude_none=True,
                summary="The process is up")
    async def live() -> dict:
        return {"status": "alive"}

    @health.get("/ready", response_model=Health, response_model_exclude_none=True,
                summary="The model is loaded and the queue has room",
                responses={503: {"model": Health, "description": "Not ready"}})
    async def ready(request: Request):
        rt: Runtime | None = request.app.state.runtime
        closed = request.app.state.gate.closed_because
        if closed:  # the process is up, and nobody can be let in: say why
            return JSONResponse({"status": "closed", "detail": closed}, 503)
        if rt is None:
            return JSONResponse({"status": "starting", "detail": "loading the model"}, 503)
        b = rt.batcher
        body = {"status": "ready", "model": rt.lm.name, "trained": rt.lm.trained,
                "device": rt.lm.device, "batching": b.enabled, "queued": b.queued,
                "streams": rt.streams, "batcher": b.stats.as_dict()}
        if rt.state != "ready" or not b.running:
            return JSONResponse(body | {"status": "draining", "detail": "shutting down"}, 503)
        if b.queued >= b.max_queue:
            return JSONResponse(body | {"status": "busy", "detail": "the queue is full"}, 503,
                                headers={"Retry-After": str(b.retry_after())})
        return body

    app.include_router(health)
    guarded = [Depends(require_identity)]
    app.include_router(predict.router, prefix="/v1", tags=["predict"], dependencies=guarded)
    app.include_router(stream.router, prefix="/v1", dependencies=guarded)
    # Every error is {"detail": "one line"} (validation errors add "errors"); 401 when
    # authentication is configured and the credentials are missing or wrong.
    errors = {401: {"model": Problem, "description": "No or bad credentials"},
              403: {"model": Problem, "description": "Not allowed for this caller"},
              422: {"model": Problem, "description": "Invalid parameters"}}
    for router, tag in ((uploads.router, "sessions"), (sessions.router, "sessions"),
                        (reports.router, "reports"), (search.router, "search"),
                        (calibration.router, "calibration")):
        app.include_router(router, prefix="/v1", tags=[tag], dependencies=guarded,
                           responses=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code in (401, 403, 404):
            await run_in_threadpool(audit_denied, request, exc.status_code, str(exc.detail))
        if exc.status_code == 405:  # Allow names every method of the path, not one route's
            methods = set()
            for route in request.app.router.routes:
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
                    methods |= route.methods
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(StoreBusy)
    async def store_busy(request: Request, exc: StoreBusy):
        return JSONResponse({"detail": "the database is busy (the worker is writing); retry "
                                       "shortly"}, 503, headers={"Retry-After": "5"})

    @app.exception_handler(Overloaded)
    @app.exception_handler(TimedOut)
    async def busy(request: Request, exc: Overloaded | TimedOut):
        return JSONResponse({"detail": f"model busy: {exc}; retry after {exc.retry_after} s"},
                            503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        line = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": line or "invalid request", "errors": errors}, 422)

    return app
