"""The HTTP API's routes (`/api/...`): each translates a request into one call of the daemon's operations.

Reads go to the core directly; deploys stream their build as Server-Sent
Events (``event: build``, then ``log`` / ``phase`` lines, ending with
``end`` and the final record). Errors are ``{"detail": "<one line>"}``, with
``field`` for a refused body; no bad input gets a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gitops.build import Build as CoreBuild
from gitops.build_logs import BuildNotFound
from gitops.deployment_files import InvalidDeployment
from gitops.engine import Engine
from gitops.errors import DockerUnavailable, KalpanaError, LockTimeout, UnknownDeployment
from gitops.history import History
from gitops.server import auth, sse
from gitops.server.broadcast import BuildStreams, Message, poll_stored, stored_head
from gitops.server.schemas import (BuildPage, Build, Deleted, Deployment, DeploymentList, Operated, Problem,
                                   Queued, build_json)

NAME = Path(..., description="The deployment's name.", max_length=200)
WAIT_SECONDS = 120.0  # how long start and delete wait for the run they queue before answering `done: false`
ERRORS = {code: {"model": Problem} for code in (400, 401, 403, 404, 409, 422, 503)}  # 400: a body that is not JSON
STREAM = {"content": {sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
          "description": "Server-Sent Events: build, log, phase, then end (the final build record)."}
CREATE_EXAMPLE = {"name": "my-app", "description": "My application", "buildCommand": "npm run build",
                  "startCommand": "npm start", "workingDir": "/workspace", "port": 3000, "subdomain": "my-app",
                  "autoRebuild": True}


class Backend(Protocol):
    """What the routes need from the daemon (``operations.Operations``)."""

    engine: Engine
    history: History
    streams: BuildStreams

    def token(self) -> str | None: ...
    def deploy(self, name: str) -> CoreBuild: ...
    def start(self, name: str, timeout: float) -> bool: ...
    def stop(self, name: str) -> None: ...
    def rollback(self, name: str, to: str | None) -> CoreBuild: ...
    def create(self, body: object) -> str: ...
    def delete(self, name: str, timeout: float) -> bool: ...


class ApiError(Exception):
    """An answer other than 2xx: status and one line (``field`` for a refused body)."""

    def __init__(self, status: int, detail: str, field: str | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field

    def response(self) -> JSONResponse:
        body = {"detail": self.detail} | ({"field": self.field} if self.field else {})
        headers = {"WWW-Authenticate": auth.SCHEME} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def status_of(exc: KalpanaError) -> int:
    """The HTTP status of a core error."""
    if isinstance(exc, (UnknownDeployment, BuildNotFound)):
        return 404
    if isinstance(exc, InvalidDeployment):
        return 422
    if isinstance(exc, (DockerUnavailable, LockTimeout)):
        return 503
    return 409  # the request is fine but the state refuses it (nothing to roll back to, files from git, ...)


async def call(function, *args: Any) -> Any:
    """Run a blocking core call on a worker thread; its KalpanaError becomes the matching ApiError."""
    try:
        return await run_in_threadpool(function, *args)
    except KalpanaError as exc:
        detail = " ".join(str(exc).split())  # one line, even for a message listing file errors
        raise ApiError(status_of(exc), detail, getattr(exc, "field", None)) from None


def router(backend: Backend) -> APIRouter:
    """Every /api route but the webhooks, behind the token check."""
    bearer = HTTPBearer(auto_error=False, description="The api_token setting (KALPANA_API_TOKEN).")

    def authorized(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        denied = auth.check(backend.token(), request.headers.get("authorization"),
                            request.client.host if request.client else None,
                            forwarded=any(h in request.headers for h in auth.FORWARDING_HEADERS))
        if denied is not None:
            raise ApiError(401 if denied is not auth.Denied.NOT_LOOPBACK else 403, denied.message())

    api = APIRouter(prefix="/api", dependencies=[Depends(authorized)], responses=ERRORS)
    engine = backend.engine

    async def one(name: str) -> Deployment:
        views = await call(engine.deployments, name)
        return Deployment.of(views[0])

    @api.get("/deployments", response_model=DeploymentList, summary="Every deployment")
    async def list_deployments() -> DeploymentList:
        return DeploymentList(deployments=[Deployment.of(v) for v in await call(engine.deployments)])

    @api.get("/deployments/{name}", response_model=Deployment, summary="One deployment")
    async def get_deployment(name: str = NAME) -> Deployment:
        return await one(name)

    @api.get("/deployments/{name}/builds", response_model=BuildPage, summary="Build history, newest first")
    async def list_builds(name: str = NAME, limit: int = Query(20, ge=1, le=200),
                          before: str | None = Query(None, max_length=200,
                                                     description="Only builds older than this build id.")
                          ) -> BuildPage:
        records = await call(engine.builds, name, None)
        return page(records, limit, before, name)

    @api.get("/builds/{build_id}", response_model=Build, summary="One build")
    async def get_build(build_id: str = Path(..., max_length=200)) -> Build:
        return Build.of(await call(engine.build, build_id))

    @api.get("/builds/{build_id}/logs", summary="A build's log: text, or an SSE stream that follows it",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}},
                                          sse.MEDIA_TYPE: {"schema": {"type": "string"}}}}})
    async def build_logs(request: Request, build_id: str = Path(..., max_length=200)) -> Response:
        wants_stream = sse.wants_stream(request.headers.get("accept"))
        if wants_stream and backend.streams.known(build_id):
            return stream(follow(backend, build_id))  # 50 followers of one build: no history read each
        build = await call(engine.build, build_id)
        if not wants_stream:
            return PlainTextResponse(await call(backend.history.logs, build.id))
        return stream(follow(backend, build.id))

    @api.post("/deployments/{name}/deploy", summary="Rebuild and redeploy now",
              responses={200: STREAM, 202: {"model": Queued}}, status_code=200)
    async def deploy(request: Request, name: str = NAME) -> Response:
        build = await call(backend.deploy, name)
        if "application/json" in (request.headers.get("accept") or "") and not sse.wants_stream(
                request.headers.get("accept")):
            return JSONResponse({"build": build.id}, status_code=202)
        return stream(follow(backend, build.id), first=[("build", {"build": build.id})])

    @api.post("/deployments/{name}/stop", response_model=Operated, summary="Stop; stays stopped until start")
    async def stop(name: str = NAME) -> Operated:
        await call(backend.stop, name)
        return Operated(deployment=await one(name))

    @api.post("/deployments/{name}/start", response_model=Operated, summary="Undo stop")
    async def start(name: str = NAME) -> Operated:
        done = await call(backend.start, name, WAIT_SECONDS)
        return Operated(deployment=await one(name), done=done)

    @api.post("/deployments/{name}/rollback", response_model=Operated,
              summary="Redeploy the image of an earlier successful build")
    async def rollback(name: str = NAME, to: str | None = Query(None, max_length=200,
                                                                description="Build id (default: the previous one).")
                       ) -> Operated:
        build = await call(backend.rollback, name, to)
        return Operated(deployment=await one(name), build=Build.of(build))

    @api.post("/deployments", response_model=Deployment, status_code=201,
              summary="Declare a deployment (writes <deployments_dir>/<name>.yaml, then applies it)")
    async def create(body: dict[str, Any] = Body(..., openapi_examples={"guide": {"value": CREATE_EXAMPLE}})
                     ) -> Deployment:
        name = await call(backend.create, body)
        return await one(name)

    @api.delete("/deployments/{name}", response_model=Deleted,
                summary="Remove the deployment's file and prune it (its history stays)")
    async def delete(name: str = NAME) -> Deleted:
        done = await call(backend.delete, name, WAIT_SECONDS)
        return Deleted(deleted=name, done=done)

    return api


def page(records: list[CoreBuild], limit: int, before: str | None, name: str) -> BuildPage:
    """One page of ``records`` (newest first): at most ``limit`` builds older than ``before``."""
    start = 0
    if before:
        ids = [b.id for b in records]
        if before not in ids:
            raise ApiError(404, f"no build {before!r} of {name}: `before` takes an id from this list's `next`")
        start = ids.index(before) + 1
    chunk = records[start:start + limit]
    more = start + limit < len(records)
    return BuildPage(builds=[Build.of(b) for b in chunk], next=chunk[-1].id if more and chunk else None)


async def follow(backend: Backend, build_id: str) -> AsyncIterator[Message | None]:
    """A build's messages: from this daemon's channel when it has one, else from the stored log."""
    if backend.streams.known(build_id):
        def head(count: int) -> list[Message] | None:
            return stored_head(backend.history.logs(build_id), count, build_id)

        async for message in backend.streams.follow(build_id, head=head):
            yield message
        return

    def read() -> tuple[str, dict[str, Any] | None]:
        build = backend.history.get(build_id)
        text = backend.history.logs(build_id)
        return text, (build.to_dict() if build is not None and build.status.finished else None)

    async for message in poll_stored(read, build_id):
        yield message


def stream(messages: AsyncIterator[Message | None], first: list[tuple[str, Any]] = ()) -> StreamingResponse:
    """The SSE response of ``messages`` (end events carry the API's build shape)."""

    async def shaped() -> AsyncIterator[Message | None]:
        async for message in messages:
            if message is not None and message.kind == "end":
                message = Message("end", build_json(message.data))
            yield message

    # Starlette cancels the response when the client goes: the generators close, and the channel's
    # waiter goes with them (``BuildStreams.follow``'s finally).
    return StreamingResponse(sse.encode(shaped(), first), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)

