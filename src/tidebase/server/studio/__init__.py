"""The Studio: the web dashboard of `tidebase serve`, under `/studio` on the server's own port.

People watch runs live, decide gates and travel in time here. It is server-rendered HTML (Jinja2) with a few small
JavaScript modules for the live parts, and it reads and writes only through the public library API over the server's
pool, plus the server's SSE stream code: no second data path, nothing fetched from elsewhere at run time, nothing to
build. `mount()` returns the Starlette mount the app adds; `ROOT` redirects `/` to it.

Layout: `guard` (sessions, CSRF, loopback), `session` (signed cookies), `pages` (shared rendering), one `views_*`
module per page family, `actions` (every POST), `jsonview` and `chart` (HTML and SVG helpers), `templates/`,
`static/`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from tidebase.server.studio import actions, views_auth, views_gates, views_ops, views_run, views_runs, views_state
from tidebase.server.studio.guard import Guard
from tidebase.server.studio.pages import STUDIO_KEY, Studio, page, render
from tidebase.server.studio.session import Sessions, load_secret

PREFIX = "/studio"
STATIC = Path(__file__).parent / "static"


@page
async def not_found(request: Request) -> Response:
    return render(request, "error.html", status=404, title="Not found", code="not_found",
                  detail="There is no Studio page at this address.")


def routes() -> list[Route | Mount]:
    post = ["POST"]
    return [
        Route("/", views_runs.runs, methods=["GET"]),
        Route("/pulse", views_runs.pulse, methods=["GET"]),
        Route("/runs/{run_id}", views_run.run_page, methods=["GET"]),
        Route("/runs/{run_id}/part/{part}", views_run.run_part, methods=["GET"]),
        Route("/runs/{run_id}/events", views_run.run_events, methods=["GET"]),
        Route("/runs/{run_id}/output", views_run.step_output, methods=["GET"]),
        Route("/runs/{run_id}/state", views_state.state, methods=["GET"]),
        Route("/runs/{run_id}/cancel", actions.cancel, methods=post),
        Route("/runs/{run_id}/fork", actions.fork, methods=post),
        Route("/runs/{run_id}/release", actions.release, methods=post),
        Route("/runs/{run_id}/skip", actions.skip, methods=post),
        Route("/gates", views_gates.gates, methods=["GET"]),
        Route("/gates/{gate_id}/resolve", actions.resolve_gate, methods=post),
        Route("/queues", views_ops.queues, methods=["GET"]),
        Route("/schedules", views_ops.schedules, methods=["GET"]),
        Route("/schedules/pause", actions.pause_schedule, methods=post),
        Route("/schedules/resume", actions.resume_schedule, methods=post),
        Route("/usage", views_ops.usage, methods=["GET"]),
        Route("/login", views_auth.login_form, methods=["GET"]),
        Route("/login", views_auth.login, methods=post),
        Route("/logout", views_auth.logout, methods=post),
        Mount("/static", StaticFiles(directory=STATIC)),
        Route("/{rest:path}", not_found, methods=["GET", "POST"]),
    ]


def mount(api_key: str | None, public_url: str, lease_ms: int, home: Path | None = None,
          secret: str | None = None) -> Mount:
    """The Studio as a mount of the server's app. `secret` signs its sessions (`studio_secret` of the settings);
    without it, `home` holds a generated one (default: the Tidebase home)."""
    if home is None:
        from tidebase.core.embedded import data_dir  # noqa: PLC0415 - only to locate the home folder

        home = data_dir()
    sessions = Sessions(api_key, load_secret(home, secret))
    state = Studio(sessions, public_url, lease_ms)
    return Mount(PREFIX, app=Guard(Router(routes()), sessions, public_url, {STUDIO_KEY: state}))


async def to_studio(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}{PREFIX}/", status_code=307)


ROOT = Route("/", to_studio, methods=["GET", "HEAD"])
