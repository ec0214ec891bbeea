"""The API's JSON shapes (pydantic, so that /openapi.json describes exactly what is sent) and their converters.

These are the contract the dashboard and other clients build on; the core's
own records (``Build``, ``DeploymentView``) stay free to change behind them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gitops.build import Build as CoreBuild
from gitops.overview import DeploymentView

Status = Literal["PENDING", "BUILDING", "SUCCESS", "FAILED", "CANCELLED"]
State = Literal["running", "crash-looping", "stopped", "failed", "building", "not deployed"]


class Build(BaseModel):
    """One build record."""

    model_config = ConfigDict(extra="forbid")

    id: str
    deployment: str
    status: Status
    trigger: Literal["manual", "webhook", "auto"]
    action: str
    commit: str | None
    commit_message: str | None
    branch: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    error: str | None
    image: str | None

    @classmethod
    def of(cls, build: CoreBuild) -> "Build":
        """The API form of a core build record."""
        return cls(id=build.id, deployment=build.deployment, status=build.status.value,
                   trigger=build.triggered_by.value, action=build.action, commit=build.commit_hash,
                   commit_message=build.commit_message, branch=build.branch, created_at=build.created_at,
                   started_at=build.started_at, finished_at=build.completed_at,
                   duration_seconds=build.durations.get("total", build.duration), error=build.error_message,
                   image=build.image)


def build_json(record: dict[str, Any]) -> dict[str, Any]:
    """A core build dict (``Build.to_dict``) in the API's shape: what an SSE ``end`` event carries."""
    return Build.of(CoreBuild.from_dict(record)).model_dump()


class Deployment(BaseModel):
    """One deployment: spec summary, state, URL, builds, webhook URL, the file it comes from."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None
    file: str | None = Field(description="The file that declares it (null: no file does any more).")
    state: State
    url: str | None
    image: str | None
    subdomain: str | None
    port: int | None
    exposed_port: int | None
    webhook_url: str
    detail: str
    current_build: Build | None = Field(description="The build whose image its container runs.")
    last_build: Build | None = Field(description="The newest build, whatever its status.")

    @classmethod
    def of(cls, view: DeploymentView) -> "Deployment":
        """The API form of a core deployment view."""
        s = view.status
        return cls(name=s.name, description=view.description, file=view.file, state=s.state.value, url=s.url,
                   image=s.image, subdomain=view.subdomain, port=view.port, exposed_port=view.exposed_port,
                   webhook_url=view.webhook_url, detail=s.detail,
                   current_build=Build.of(view.current_build) if view.current_build else None,
                   last_build=Build.of(view.last_build) if view.last_build else None)


class DeploymentList(BaseModel):
    deployments: list[Deployment]


class BuildPage(BaseModel):
    builds: list[Build]
    next: str | None = Field(description="Pass as `before` for the next (older) page; null on the last page.")


class Operated(BaseModel):
    """What stop, start and rollback answer."""

    deployment: Deployment
    build: Build | None = None
    done: bool = Field(True, description="false: the run it queued had not ended when the answer went out.")


class Queued(BaseModel):
    build: str


class Deleted(BaseModel):
    deleted: str
    done: bool = Field(True, description="false: the pruning run had not ended when the answer went out.")


class Problem(BaseModel):
    """Every error: one line saying what is wrong and what to do; ``field`` for a refused body."""

    detail: str
    field: str | None = None


class Health(BaseModel):
    ok: bool
