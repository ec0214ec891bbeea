"""The web dashboard: ``GET /`` serves the page, ``/static`` its script and styles.

The page is plain HTML, CSS and JavaScript shipped inside the package (no
build step, no CDN), so it works offline. It needs no authentication to load:
it asks for the API token itself and sends it on every ``/api`` call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The assets are small and change with every upgrade: the browser asks again each time and gets a 304.
_NO_CACHE = {"Cache-Control": "no-cache"}


class _Assets(StaticFiles):
    def file_response(self, *args, **kwargs):  # type: ignore[override]
        response = super().file_response(*args, **kwargs)
        response.headers.update(_NO_CACHE)
        return response


def mount(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: the page at ``/``, its assets under ``/static``.

    Neither route is in the OpenAPI schema: they answer HTML and files, not the API's JSON.
    """
    app.mount("/static", _Assets(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)
