"""The live report server as a Starlette application (served by uvicorn; both come with dagster-webserver).

Routes: `/` (the scopes a token may see), `/clients/<client>` and `/portfolio` (every report, filters in the
query string, `fragment=1` for the polling script), `/<scope>/<report>.csv` and `.svg` (its chart), `/api/versions/<scope>` (the
silver snapshot key the page polls), `/login` and `/logout`. Credentials: `Authorization: Bearer <token>` or
the cookie `/login` sets. Access is decided by the token's grant, never by the URL alone.
"""
from __future__ import annotations

import io
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence
from urllib.parse import parse_qs

import pyarrow.csv as pacsv
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from dw_assets.identifiers import InvalidIdentifier, validate_client_name
from dw_assets.model import StandardModel, load_model
from dw_assets.settings import Settings

from ..catalog import ReportDefinitionError, ReportSpec
from ..engine import PORTFOLIO_SCOPE, ReportRun, Scope
from ..gold import select_reports
from . import pages
from .auth import Grant, TokenStore
from .cache import ReportCache, ScopeResults, versions_key
from .filters import FilterError, FilterValues, apply_filters, declared_filters, parse_values
from .urls import DEFAULT_HOST, DEFAULT_PORT

log = logging.getLogger("dw_assets.reports.live")

COOKIE = "dw_reports_token"
_RENDERED_MAX = 256  # rendered blocks and charts kept (scope x silver snapshot x filters)


@dataclass
class LiveState:
    settings: Settings
    cache: ReportCache
    tokens: TokenStore
    clients: Callable[[], Sequence[str]]
    rendered: "OrderedDict[tuple[str, str, str], object]"
    lock: threading.Lock


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def registry_clients(settings: Settings, ttl: float = 10.0) -> Callable[[], list[str]]:
    """Active clients from the registry, re-read at most every `ttl` seconds (a poll must not query MariaDB)."""
    from dw_assets.onboarding.registry import list_clients

    memo: dict[str, object] = {"at": -ttl, "names": []}

    def clients() -> list[str]:
        if time.monotonic() - float(memo["at"]) >= ttl:  # type: ignore[arg-type]
            memo["names"], memo["at"] = [c.name for c in list_clients(settings, status="active")], time.monotonic()
        return list(memo["names"])  # type: ignore[arg-type]

    return clients


# ---- request helpers --------------------------------------------------------------------------------------

def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE)


def _grant(state: LiveState, request: Request) -> Grant:
    token = _token(request)
    grant = state.tokens.verify(token)
    if grant is None:
        raise HttpError(401, "This page needs an access token." if not token else "The access token was not accepted "
                        "(unknown, revoked or mistyped).")
    return grant


def _clients(state: LiveState) -> list[str]:
    try:
        return list(state.clients())
    except Exception as e:  # noqa: BLE001 - the registry is MariaDB: say so instead of a bare 500
        raise HttpError(503, f"the client registry cannot be read ({type(e).__name__}); is the stack up?") from None


def _scope(state: LiveState, request: Request, grant: Grant) -> Scope:
    """The scope of the URL, after the grant allows it: a client viewer learns nothing about other clients."""
    raw = request.path_params.get("client")
    name = PORTFOLIO_SCOPE if raw is None else raw
    if not grant.can_view(name):
        what = "the portfolio" if name == PORTFOLIO_SCOPE else f"client {name!r}"
        raise HttpError(403, f"Your token ({grant.describe()}) does not give access to {what}.")
    clients = _clients(state)
    if name == PORTFOLIO_SCOPE:
        if not clients:
            raise HttpError(404, "No active clients yet: nothing to report across.")
        return Scope.portfolio(clients)
    try:
        validate_client_name(name)
    except InvalidIdentifier:
        raise HttpError(404, f"{name[:64]!r} is not a client name.") from None
    if name not in clients:
        raise HttpError(404, f"No active client {name!r}.")
    return Scope.client(name)


def _values(state: LiveState, request: Request) -> FilterValues:
    choice_columns = {f.column for s in state.cache.specs() for f in declared_filters(s) if f.kind == "choice"}
    multi = {k: request.query_params.getlist(k) for k in choice_columns}
    try:
        return parse_values(request.query_params, multi, choice_columns)
    except FilterError as e:
        raise HttpError(400, str(e)) from None


def _memo(state: LiveState, key: tuple[str, str, str], make: Callable[[], object]) -> object:
    """Rendered output (page blocks, charts) per scope, silver snapshot and filters; a small LRU."""
    with state.lock:
        if key in state.rendered:
            state.rendered.move_to_end(key)
            return state.rendered[key]
    value = make()
    with state.lock:
        state.rendered[key] = value
        while len(state.rendered) > _RENDERED_MAX:
            state.rendered.popitem(last=False)
    return value


def _rendered(state: LiveState, results: ScopeResults, values: FilterValues) -> str:
    return _memo(state, (results.scope.name, results.key, values.query_string()),
                 lambda: pages.content(results, values))  # type: ignore[return-value]


def _error_response(request: Request, e: HttpError) -> Response:
    api = request.url.path.startswith("/api/") or request.url.path.endswith((".csv", ".svg"))
    if api:
        return JSONResponse({"error": e.message}, status_code=e.status)
    if e.status in (401, 403):
        return HTMLResponse(pages.denied_page(e.status, e.message, request.url.path), status_code=e.status)
    return HTMLResponse(pages.document(f"{e.status}", f'<div class="denied"><h1>{e.status}</h1>'
                                                      f"<p>{pages.esc(e.message)}</p></div>"), status_code=e.status)


# ---- endpoints ----------------------------------------------------------------------------------------------

def build_app(settings: Settings, clients: Callable[[], Sequence[str]] | None = None,
              model: StandardModel | None = None, specs: Sequence[ReportSpec] | None = None) -> Starlette:
    """The application for one deployment. `clients` lists the clients pages may show (default: the registry's
    active clients); `specs` the reports (default: every report of the model)."""
    model = model or load_model(settings.model_path)
    chosen = tuple(specs) if specs is not None else None
    state = LiveState(settings, ReportCache(settings, model, lambda: chosen or select_reports(None, model)),
                      TokenStore(settings.home), clients or registry_clients(settings), OrderedDict(),
                      threading.Lock())

    def guarded(handler: Callable[[Request], object]) -> Callable[[Request], object]:
        async def endpoint(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                response = await handler(request)  # type: ignore[misc]
            except HttpError as e:
                response = _error_response(request, e)
            except ReportDefinitionError as e:
                response = PlainTextResponse(f"report definition error: {e}", status_code=500)
            # Path only: query strings carry filters, never tokens, but the log stays minimal anyway.
            log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                     1000 * (time.perf_counter() - t0))
            return response
        return endpoint

    async def index(request: Request) -> Response:
        grant = _grant(state, request)
        names = await run_in_threadpool(_clients, state)
        return HTMLResponse(pages.index_page(grant, names))

    async def scope_page(request: Request) -> Response:
        grant = _grant(state, request)
        scope = await run_in_threadpool(_scope, state, request, grant)
        values = _values(state, request)
        results = await run_in_threadpool(state.cache.results, scope)
        rendered = await run_in_threadpool(_rendered, state, results, values)
        if request.query_params.get("fragment"):
            return JSONResponse({"key": results.key, "content": rendered, "meta": pages.meta(results)},
                                headers={"Cache-Control": "no-store"})
        return HTMLResponse(pages.scope_page(results, values, grant, rendered), headers={"Cache-Control": "no-store"})

    async def versions(request: Request) -> Response:
        grant = _grant(state, request)
        scope = await run_in_threadpool(_scope, state, request, grant)
        v = await run_in_threadpool(state.cache.versions, scope)
        return JSONResponse({"scope": scope.name, "key": versions_key(v),
                             "tables": [{"client": c, "table": t, "version": n} for c, t, n in v]},
                            headers={"Cache-Control": "no-store"})

    async def one_report(request: Request) -> tuple[ScopeResults, ReportRun, FilterValues]:
        """The checks and data of a single-report address (its CSV, its chart)."""
        grant = _grant(state, request)
        scope = await run_in_threadpool(_scope, state, request, grant)
        values = _values(state, request)
        results = await run_in_threadpool(state.cache.results, scope)
        name = request.path_params["report"]
        run = results.runs.get(name)
        if run is None:
            raise HttpError(404, results.missing.get(name) or f"no report named {name!r}")
        return results, run, values

    async def csv(request: Request) -> Response:
        results, run, values = await one_report(request)
        scope, name = results.scope, run.spec.name
        table = await run_in_threadpool(apply_filters, run.spec, run.table, values)
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        return Response(buf.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{scope.name}-{name}.csv"', "Cache-Control": "no-store",
            "X-Silver-Snapshot": results.key})

    async def chart(request: Request) -> Response:
        results, run, values = await one_report(request)
        scope, name = results.scope, run.spec.name
        key = ("svg:" + scope.name, results.key, name + "?" + values.query_string())
        svg = _memo(state, key, lambda: pages.chart_svg(run, values) or b"")
        if not svg:
            raise HttpError(404, "no rows to chart")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})

    async def login_form(request: Request) -> Response:
        return HTMLResponse(pages.denied_page(401, "Sign in with your access token.", "/"), status_code=401)

    async def login(request: Request) -> Response:
        # A urlencoded form read by hand: Starlette's form parser needs python-multipart, which is not installed.
        form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
        token, next_path = (form.get("token") or [""])[0].strip(), (form.get("next") or ["/"])[0]
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/"  # never redirect off this server
        if await run_in_threadpool(state.tokens.verify, token) is None:
            raise HttpError(401, "The access token was not accepted (unknown, revoked or mistyped).")
        response = RedirectResponse(next_path, status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=8 * 3600)
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "queries": state.cache.queries})

    app = Starlette(routes=[
        Route("/", guarded(index)),
        Route("/portfolio", guarded(scope_page)),
        Route("/clients/{client}", guarded(scope_page)),
        Route("/portfolio/{report}.csv", guarded(csv)),
        Route("/clients/{client}/{report}.csv", guarded(csv)),
        Route("/portfolio/{report}.svg", guarded(chart)),
        Route("/clients/{client}/{report}.svg", guarded(chart)),
        Route("/api/versions/portfolio", guarded(versions)),
        Route("/api/versions/clients/{client}", guarded(versions)),
        Route("/login", guarded(login_form), methods=["GET"]),
        Route("/login", guarded(login), methods=["POST"]),
        Route("/logout", guarded(logout)),
        Route("/healthz", health),
    ])
    app.state.live = state
    return app


def serve(settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          clients: Sequence[str] | None = None) -> None:
    import uvicorn

    app = build_app(settings, (lambda: list(clients)) if clients else None)
    # No access log: uvicorn's would print query strings; the app logs method, path and status itself.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
