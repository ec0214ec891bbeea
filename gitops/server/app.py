"""FastAPI app: the guide's per-deployment webhook and one instance-wide webhook.

Handlers only check and queue: GitHub gives up after 10 s, so the answer
(202 with what was queued) goes out at once and the pull + apply run in the
daemon's work queue.

The signature is checked before anything else is told: an unsigned or
wrongly signed request gets the same 401 whether or not the deployment it
names exists (an unknown name has no secret, so no signature matches it),
and no answer names a file on the host. The daemon's log, which only the
operator reads, says which it was: every refused request is one warning line
(what was refused, why, from where), never a secret, signature or body.
"""

from __future__ import annotations

import re
import secrets
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from gitops import webhook as wh
from gitops.deliveries import Claim
from gitops.events import Events, Warned
from gitops.errors import KalpanaError

DEPLOYMENT_SETTING = "webhook_secret in the deployment's file"


class Receiver(Protocol):
    """What the app needs from the daemon."""

    insecure: bool

    def secret_for(self, name: str | None) -> tuple[str | None, str]:
        """(secret, the setting that holds it) of a deployment (or the instance when ``name`` is None).

        The setting's words are used for the instance endpoint only.
        """

    def known(self, name: str) -> bool:
        """Is ``name`` a deployment of this instance?"""

    def targets(self, name: str | None) -> list[wh.Target]:
        """What a push to this endpoint may rebuild."""

    def claim_delivery(self, delivery: str | None) -> Claim:
        """NEW (and in flight from now on), QUEUED (its job waits or runs) or HANDLED (its job succeeded)."""

    def enqueue_push(self, work: wh.PushWork, push: wh.Push, delivery: str | None) -> None:
        """Queue the work a push asks for."""


class Refusals:
    """Logs each refused request as one ``Warned`` event on the daemon's bus (nothing without one)."""

    def __init__(self, events: Events | None):
        self._events = events

    def __call__(self, request: Request, status: int, why: str, deployment: str | None = None) -> None:
        """Log that ``request`` got ``status`` because ``why`` (the operator's words: may say what the caller is not told)."""
        if self._events is None:
            return
        client = request.client.host if request.client else "unknown client"
        delivery = request.headers.get(wh.DELIVERY_HEADER)
        said = f" (delivery {_printable(delivery, 64)})" if delivery else ""
        self._events.emit(Warned(deployment, f"refused {request.method} {_printable(request.url.path, 120)} "
                                             f"from {client} with {status}: {why}{said}"))


def create_app(receiver: Receiver, events: Events | None = None, *, backend=None) -> FastAPI:
    """The daemon's app: webhooks, and with ``backend`` (``operations.Operations``) the API and dashboard.

    ``events`` gets a line for every refused webhook request.
    """
    app = FastAPI(title="Kalpana", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if backend is not None else None,
                  description="Deployments declared by files, built and run on Docker. Every /api route but the "
                              "webhooks needs `Authorization: Bearer <api_token>`.")
    metrics = backend.metrics if backend is not None else None
    # What an unknown deployment's signature is checked against: a key nobody knows, so the answer
    # (and the time it takes) is that of a wrong signature.
    nobody_knows = secrets.token_hex(32)
    refused = Refusals(events)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    @app.post(wh.DEPLOYMENT_PATH, include_in_schema=False)
    async def deployment_webhook(name: str, request: Request) -> JSONResponse:
        return _counted(metrics, await _handle(receiver, request, name, nobody_knows, refused))

    @app.post(wh.INSTANCE_PATH, include_in_schema=False)
    async def instance_webhook(request: Request) -> JSONResponse:
        return _counted(metrics, await _handle(receiver, request, None, nobody_knows, refused))

    if backend is not None:
        _mount_api(app, backend)
    return app


def _mount_api(app: FastAPI, backend) -> None:
    import importlib.util

    from gitops.server import api, openapi
    from gitops.server.metrics import CONTENT_TYPE

    app.include_router(api.router(backend))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:  # sync: the scrape reads Docker and the files, on a worker thread
        return Response(backend.metrics.render(), media_type=CONTENT_TYPE)

    @app.exception_handler(api.ApiError)
    async def api_error(request: Request, exc: api.ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return openapi.validation_problem(exc).response()

    @app.exception_handler(KalpanaError)
    async def core_error(request: Request, exc: KalpanaError) -> JSONResponse:
        return api.ApiError(api.status_of(exc), " ".join(str(exc).split())).response()

    openapi.install(app)
    if importlib.util.find_spec("gitops.server.dashboard") is not None:
        from gitops.server import dashboard

        dashboard.mount(app)


def _counted(metrics, response: JSONResponse) -> JSONResponse:
    if metrics is not None:
        metrics.delivery(_outcome(response))
    return response


def _outcome(response: JSONResponse) -> str:
    import json

    body = json.loads(response.body or b"{}")
    if response.status_code >= 400:
        return "rejected"
    if body.get("event") == "ping":
        return "ping"
    for outcome in ("duplicate", "ignored"):
        if body.get(outcome):
            return outcome
    return "queued"


async def _handle(receiver: Receiver, request: Request, name: str | None, nobody_knows: str,
                  refused: Refusals) -> JSONResponse:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > wh.MAX_BODY:
        refused(request, 413, f"body of {length} bytes is over 25 MB")
        return _answer(413, "payload over 25 MB")
    body = await _read_capped(request)
    if body is None:
        refused(request, 413, "body over 25 MB")
        return _answer(413, "payload over 25 MB")
    known = name is not None and receiver.known(name)
    if name is None:
        secret, setting = receiver.secret_for(None)
    elif known:
        # Not the receiver's words, which may name the file: the caller needs no path of the host.
        secret, setting = receiver.secret_for(name)[0], DEPLOYMENT_SETTING
    else:
        secret, setting = nobody_knows, DEPLOYMENT_SETTING
    which = name if known else None  # an unknown name is the caller's word: never the event's deployment
    if not secret:  # an empty secret is no secret: anyone can compute an HMAC keyed with ""
        if not receiver.insecure:
            refused(request, 403, f"no webhook secret configured: set {setting}", which)
            return _answer(403, f"webhook secret not configured: set {setting} (the same secret goes into "
                                "GitHub's webhook settings)")
    elif not wh.verify(secret, body, request.headers.get(wh.SIGNATURE_HEADER)):
        if name is not None and not known:
            why = f"no deployment named {name[:64]!r} in this instance"  # repr: escapes control characters
        elif request.headers.get(wh.SIGNATURE_HEADER):
            why = f"wrong {wh.SIGNATURE_HEADER} signature (the sender's secret differs from {setting})"
        else:
            why = f"no {wh.SIGNATURE_HEADER} signature (is a secret set in the sender's webhook settings?)"
        refused(request, 401, why, which)
        where = "" if name is None else ", and that the URL names a deployment of this instance"
        return _answer(401, f"missing or wrong {wh.SIGNATURE_HEADER} signature: check that the secret in "
                            f"GitHub matches {setting}{where}")
    event = request.headers.get(wh.EVENT_HEADER, "")
    delivery = request.headers.get(wh.DELIVERY_HEADER)
    if event == "ping":
        return _answer(200, "pong", event="ping")
    if event != "push":
        return _answer(202, f"event {event or '(none)'!r} ignored: only push events deploy", ignored=True)
    try:
        push = wh.Push.from_payload(wh.decode(body, request.headers.get("content-type")))
    except wh.BadPayload as exc:
        refused(request, 400, str(exc), which)
        return _answer(400, str(exc))
    why = push.ignored_because
    if why:
        return _answer(202, f"ignored: {why}", ignored=True)
    work = wh.work_for(push, receiver.targets(name))
    if not work.anything:
        reasons = "; ".join(f"{k}: {v}" for k, v in work.ignored.items()) or "no deployment follows this repository"
        return _answer(202, f"ignored: {reasons}", ignored=True, skipped=work.ignored)
    claim = receiver.claim_delivery(delivery)
    if claim is Claim.HANDLED:
        return _answer(200, f"delivery {delivery} was already handled", duplicate=True)
    if claim is Claim.QUEUED:
        return _answer(200, f"delivery {delivery} is already queued", duplicate=True)
    receiver.enqueue_push(work, push, delivery)
    queued = (["config repository"] if work.config else []) + work.deployments
    return _answer(202, f"queued {', '.join(queued)} at {push.after[:7]}", queued=queued, commit=push.after,
                   skipped=work.ignored)


async def _read_capped(request: Request) -> bytes | None:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > wh.MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _printable(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` with control characters escaped: the caller chose it, and a log line stays one line."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _answer(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=status)
