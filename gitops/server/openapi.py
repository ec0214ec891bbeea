"""The published schema (/openapi.json) and the one shape of a refused request.

FastAPI describes a refused request as its own ``HTTPValidationError`` (a
list of problems); this API answers every error as ``Problem`` (one line and
the field), so the schema says that instead: what it publishes is what is sent.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi

from gitops.server.api import ApiError
from gitops.server.schemas import Problem


def validation_problem(exc: RequestValidationError) -> ApiError:
    """A 422 naming the first field that was refused and why."""
    errors = exc.errors()
    if not errors:
        return ApiError(422, "the request is not valid")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    where = {"query": "query parameter", "path": "path parameter", "body": "body"}.get(
        str(first.get("loc", ("",))[0]), "")
    field = ".".join(loc) or None
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    what = f"{where} {field}".strip() if field else (where or "request")
    return ApiError(422, f"{what}: {message}", field)


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish ``Problem`` for 422 answers, and build it once."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = spec.setdefault("components", {}).setdefault("schemas", {})
            components.pop("ValidationError", None)
            components["HTTPValidationError"] = Problem.model_json_schema()
            components["HTTPValidationError"]["title"] = "HTTPValidationError"
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = schema
