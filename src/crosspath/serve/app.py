"""The HTTP layer: a FastAPI app over a `Service`, and a uvicorn server that shuts down gracefully.

    GET  /health                 liveness + queue counts (no key needed; 503 while shutting down)
    GET  /v1/models              the served model
    POST /v1/chat/completions    messages -> consensus answer (stream=true: server-sent events)
    POST /v1/completions         prompt   -> consensus answer
    GET  /docs, /openapi.json    a plain HTML list of the routes (loads nothing), the OpenAPI schema

With --api-key every route but /health needs `Authorization: Bearer KEY` (an empty key is refused
at start-up). Errors are OpenAI-shaped, `{"error": {"message", "type", "code", "param"}}`: 401 bad
or missing key, 404 unknown model or route, 413 body over --max-body-bytes, 422 body not JSON /
not valid Unicode / not the schema, 400 valid but over this server's limits (prompt tokens, paths,
budgets), 429 queue full, 503 shutting down; 500/502 carry no exception text (it is logged).

Graceful shutdown (SIGTERM / SIGINT, or `ServerThread.stop()`): the listening socket closes, new
requests on open connections get 503, in-flight requests have --shutdown-timeout seconds to
finish; then every request still pending or running is answered 503.
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import protocol
from .config import RequestError, ServeConfig, check_auth
from .scheduler import unavailable
from .service import Service

log = logging.getLogger("crosspath.serve")
PING_SECONDS = 10.0  # an SSE comment is sent this often while a streamed request waits


def _error(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def docs_page(app: FastAPI, cfg: ServeConfig) -> str:
    """A self-contained HTML page listing the routes: no script, no stylesheet, nothing fetched."""
    rows = "".join(f"<tr><td>{'/'.join(sorted(r.methods))}</td><td><code>{html.escape(r.path)}</code></td>"
                   f"<td>{html.escape(r.summary or '')}</td></tr>" for r in app.routes if isinstance(r, APIRoute))
    auth = ("every route but /health needs <code>Authorization: Bearer KEY</code>" if cfg.api_key
            else "no API key is set: every route is open")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>crosspath serve</title></head><body>"
            f"<h1>crosspath serve: {html.escape(cfg.name)}</h1><p>OpenAI-compatible API; {auth}. "
            f"Limits: {cfg.max_body_bytes} bytes per body, {cfg.max_prompt_tokens} prompt tokens, "
            f"{cfg.max_paths} paths, {cfg.max_path_tokens} tokens per path. Schema: "
            f"<a href=\"openapi.json\">openapi.json</a>.</p><table border=1 cellpadding=4>"
            f"<tr><th>method</th><th>route</th><th></th></tr>{rows}</table></body></html>")


def create_app(service: Service) -> FastAPI:
    cfg = service.cfg
    warning = check_auth(cfg)  # raises on an empty key; `crosspath serve` also prints the warning before loading
    if warning:
        log.warning(warning)
    # FastAPI's own /docs loads Swagger UI from a CDN and, like /openapi.json, has no key check:
    # both are off, and the routes below serve them behind the key.
    app = FastAPI(title="crosspath", summary="OpenAI-compatible answers from multi-path reasoning (LeaP)",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(RequestError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return _error(RequestError(422, f"invalid request: {exc.errors()[:1]}", code="invalid_value"))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # uvicorn logs the traceback
        return _error(RequestError(500, "internal error (the details are in the server log)", type="server_error"))

    def check_key(request: Request) -> None:
        if not cfg.api_key:
            return
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), cfg.api_key.encode()):
            raise RequestError(401, "missing or invalid API key: send `Authorization: Bearer <key>`",
                               code="invalid_api_key")

    def model_card() -> dict[str, Any]:
        return {"id": cfg.name, "object": "model", "created": int(service_started), "owned_by": "crosspath",
                "crosspath": {"method": cfg.method, "backend": cfg.backend, "paths": cfg.paths}}

    service_started = time.time()

    @app.get("/health", summary="liveness and queue counts (no key needed; 503 while shutting down)")
    async def health():
        st = service.stats()
        return JSONResponse({"status": "ok" if st["accepting"] else "shutting_down", **st},
                            status_code=200 if st["accepting"] else 503)

    @app.get("/v1/models", summary="the served model")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", summary="one model (404 unless it is the served one)")
    async def model(model_id: str, request: Request):
        check_key(request)
        if model_id != cfg.name:
            raise RequestError(404, f"model {model_id!r} does not exist; this server serves {cfg.name!r}",
                               code="model_not_found", param="model")
        return model_card()

    async def read_body(request: Request) -> bytes:
        limit = cfg.max_body_bytes
        too_big = RequestError(413, f"the request body is larger than {limit} bytes (--max-body-bytes)",
                               code="body_too_large")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_big
        buf = bytearray()
        async for part in request.stream():
            buf += part
            if len(buf) > limit:
                raise too_big
        return bytes(buf)

    async def handle(request: Request, kind: str):
        check_key(request)
        if not service.scheduler.accepting:
            raise unavailable("the server is shutting down")
        body = protocol.parse_body(await read_body(request), kind)
        if body.get("model") not in (None, cfg.name):
            raise RequestError(404, f"model {body['model']!r} does not exist; this server serves {cfg.name!r}",
                               code="model_not_found", param="model")
        req = await asyncio.to_thread(service.prepare, kind, body)  # tokenizing a long prompt takes a while
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = service.submit(req, lambda k, p: loop.call_soon_threadsafe(events.put_nowait, (k, p)))
        rid = protocol.new_id(kind)
        if req.stream:
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(stream(request, kind, rid, job, events, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                try:
                    what, payload = await asyncio.wait_for(events.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        service.cancel(job)
                        return JSONResponse({}, status_code=499)
                    continue
                if what == "error":
                    return _error(payload)
                if what == "done":
                    return protocol.reply(kind, rid, cfg.name, payload)
        except asyncio.CancelledError:
            service.cancel(job)
            raise

    async def stream(request: Request, kind: str, rid: str, job, events: asyncio.Queue, include_usage: bool):
        name = cfg.name
        try:
            yield protocol.chunk(kind, rid, name, content="", role=kind == "chat")
            while True:
                try:
                    what, payload = await asyncio.wait_for(events.get(), timeout=PING_SECONDS)
                except asyncio.TimeoutError:
                    yield ": ping\n\n"
                    continue
                if what == "round":
                    yield protocol.chunk(kind, rid, name, content="" if kind == "completion" else None,
                                         extra=payload)
                elif what == "done":
                    for c in protocol.final_chunks(kind, rid, name, payload, include_usage):
                        yield c
                    return
                elif what == "error":
                    yield protocol.error_event(payload)
                    yield protocol.DONE
                    return
        finally:  # the client went away (or we finished): a pending job is dropped
            if not job.over:
                service.cancel(job)

    @app.post("/v1/chat/completions", summary="messages -> the consensus answer of several reasoning paths "
                                              "(stream=true: server-sent events)")
    async def chat_completions(request: Request):
        return await handle(request, "chat")

    @app.post("/v1/completions", summary="prompt -> the consensus answer of several reasoning paths")
    async def completions(request: Request):
        return await handle(request, "completion")

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        check_key(request)
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        check_key(request)
        return HTMLResponse(docs_page(app, cfg), headers={"Content-Security-Policy": "default-src 'none'"})

    return app


class Server(uvicorn.Server):
    """uvicorn.Server whose shutdown drains the service: finish in-flight requests for
    `shutdown_timeout` seconds, then answer every request still waiting with 503."""

    def __init__(self, service: Service, **uvicorn_kw):
        cfg = service.cfg
        uvicorn_kw.setdefault("log_level", cfg.log_level)
        config = uvicorn.Config(create_app(service), host=cfg.host, port=cfg.port, lifespan="off", http="h11",
                                loop="asyncio", timeout_graceful_shutdown=cfg.shutdown_timeout + 10, **uvicorn_kw)
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets=None) -> None:
        svc = self.service
        svc.scheduler.drain()
        loop = asyncio.get_running_loop()
        grace = svc.cfg.shutdown_timeout

        def cancel_rest() -> None:
            n = svc.scheduler.cancel_all()
            if n:
                log.warning("shutdown: %d request(s) still in flight after %.1f s: answered 503", n, grace)

        timer = loop.call_later(grace, cancel_rest)
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()
            cancel_rest()


class ServerThread:
    """The server on a background thread (tests, benchmarks, notebooks).

    >>> with ServerThread(Service(ServeConfig(model="tiny-random", port=0))) as srv:  # doctest: +SKIP
    ...     OpenAI(base_url=srv.url + "/v1", api_key="-").chat.completions.create(...)
    """

    def __init__(self, service: Service, **uvicorn_kw):
        uvicorn_kw.setdefault("log_level", "warning")
        self.service = service
        self.server = Server(service, **uvicorn_kw)
        self.thread = threading.Thread(target=self.server.run, name="crosspath-serve", daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        end = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                raise RuntimeError("the crosspath server did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.service.cfg.host}:{self.port}"

    def stop(self, timeout: float | None = None) -> None:
        """What SIGTERM does: drain, wait (--shutdown-timeout), cancel the rest, stop."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.service.scheduler.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(cfg: ServeConfig) -> None:
    """Load the backend and serve until SIGTERM / Ctrl-C (the `crosspath serve` command)."""
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    service = Service(cfg)
    log.info("crosspath serve: %s (%s backend, %s, N=%d) on http://%s:%d/v1%s", cfg.name, cfg.backend, cfg.method,
             cfg.paths, cfg.host, cfg.port, " (API key required)" if cfg.api_key else "")
    try:
        Server(service).run()
    finally:
        service.scheduler.close()
