"""The plan: a pure diff of what the files declare against what Docker runs.

No I/O here. ``make_plan`` takes the loaded specs, their resolved source
revisions, one observation of the host and the operator's intent, and
returns a value that ``plan`` prints and ``apply`` executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gitops import labels as L
from gitops.runtime.objects import Container, Image, Observed
from gitops.source import short_revision
from gitops.spec import BUILD_FIELDS, RUNTIME_FIELDS, Desired


class Action(str, Enum):
    """What one deployment needs."""

    CREATE = "create"  #: nothing runs yet: build and deploy
    REBUILD = "rebuild"  #: the source revision or a build input changed: build and deploy
    REDEPLOY = "redeploy"  #: only runtime settings changed: new container from the current image
    START = "start"  #: should run but is stopped or gone: start it / recreate it from its image
    STOP = "stop"  #: disabled in its file (enabled: false) but running
    REMOVE = "remove"  #: no file declares it any more (prune): its container, if any, and all its images
    NOOP = "noop"  #: up to date (or deliberately left alone)
    FOREIGN = "foreign"  #: managed from another workspace of this instance: never pruned or changed from here


CHANGING = {Action.CREATE, Action.REBUILD, Action.REDEPLOY, Action.START, Action.STOP, Action.REMOVE}


@dataclass(frozen=True)
class Step:
    """One deployment's action and the reason, naming what changed."""

    name: str
    action: Action
    reason: str
    desired: Desired | None = None
    container: Container | None = None  # None for a REMOVE of a deployment that left only images
    image: Image | None = None  # the image a START/REDEPLOY reuses
    revision: str = ""

    @property
    def changes(self) -> bool:
        return self.action in CHANGING

    def to_dict(self) -> dict:
        """JSON form: name, action, reason and what it acts on."""
        return {"name": self.name, "action": self.action.value, "reason": self.reason,
                "file": self.desired.file if self.desired else None,
                "container": self.container.name if self.container else None,
                "image": self.image.tag if self.image else (self.container.image if self.container else None),
                "revision": self.revision or None}


@dataclass
class Plan:
    """Every step of one run, and whether pruning was allowed."""

    steps: list[Step] = field(default_factory=list)
    prune: bool = True
    prune_note: str | None = None  # why pruning was skipped, when it was

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.changes]

    def to_dict(self) -> dict:
        return {"steps": [s.to_dict() for s in self.steps], "prune": self.prune, "prune_note": self.prune_note,
                "pending": len(self.changes)}


def make_plan(desired: dict[str, Desired], revisions: dict[str, str], observed: Observed, *,
              stopped: set[str] = frozenset(), prune: bool = True, prune_note: str | None = None,
              only: set[str] | None = None, broken: set[str] = frozenset(),
              workspace: str | None = None, take_over: bool = False) -> Plan:
    """Diff ``desired`` (with source ``revisions``) against ``observed``.

    ``only`` restricts the plan to the named deployments and turns pruning off;
    ``prune=False`` (with ``prune_note``) keeps containers and images no file declares;
    ``broken`` names deployments whose files or sources failed this run (left alone).

    ``workspace`` names this workspace (its deployments directory). A container labelled
    with another one is FOREIGN: never pruned, and when declared here too, left alone unless
    ``take_over`` (then it is redeployed with this workspace's label). Containers without
    the label (made by older versions) count as this workspace's.

    A deployment no file declares is pruned whether it left a container or
    only images (its builds failed, or its container was removed by hand):
    its REMOVE step then has no container, and removes the images alone.
    """
    plan = Plan(prune=prune and only is None, prune_note=prune_note)
    for name in sorted(desired):
        if only is not None and name not in only:
            continue
        plan.steps.append(_step(desired[name], revisions.get(name, ""), observed, name in stopped,
                                workspace, take_over))
    # An image without a deployment label is not one Kalpana built for a deployment: never pruned here.
    leftovers = set(observed.containers) | {name for name in observed.images if name}
    for name in sorted(leftovers):
        if name in desired or (only is not None and name not in only):
            continue
        container = observed.containers.get(name)
        what = "" if container else f"{_count(len(observed.images[name]), 'image')} left, no container; "
        owner = foreign_owner(container, workspace)
        if owner:
            plan.steps.append(Step(name, Action.FOREIGN, f"managed from {owner}, not from here ({workspace}): "
                                   "never pruned from here; set `instance` in kalpana.yaml to keep workspaces apart",
                                   container=container))
        elif name in broken:
            plan.steps.append(Step(name, Action.NOOP, f"{what or 'left as it runs: '}its file or source has errors "
                                   "this run", container=container))
        elif plan.prune:
            plan.steps.append(Step(name, Action.REMOVE, f"{what}no deployment file declares it", container=container))
        else:
            plan.steps.append(Step(name, Action.NOOP,
                                   f"{what}kept although no file declares it ({prune_note or 'pruning off'})",
                                   container=container))
    return plan


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def rollback_note(container: Container | None) -> str | None:
    """The note of a container that serves a rollback (labelled by `kalpana rollback`), else None."""
    if container is None or L.ROLLED_BACK_FROM not in container.labels:
        return None
    declared = container.labels[L.ROLLED_BACK_FROM]
    return (f"rolled back to build {container.build_id or '?'}; files declare "
            f"{declared or 'a newer build'}; "
            "`apply --force` or a new commit returns to the files")


def foreign_owner(container: Container | None, workspace: str | None) -> str | None:
    """The other workspace managing ``container``; None when it is this one's (or unlabelled: older versions)."""
    owner = container.labels.get(L.WORKSPACE) if container else None
    return owner if owner and workspace and owner != workspace else None


def _step(d: Desired, revision: str, observed: Observed, stopped: bool, workspace: str | None = None,
          take_over: bool = False) -> Step:
    name = d.name
    container = observed.containers.get(name)
    owner = foreign_owner(container, workspace)
    if owner and not take_over:
        return Step(name, Action.FOREIGN, f"managed from {owner}, also declared here ({workspace}): "
                    "`apply --take-over` moves it here, or set `instance` in kalpana.yaml to keep both apart",
                    desired=d, container=container, revision=revision)
    step = _own_step(d, revision, observed, stopped, container)
    if owner and step.action in (Action.NOOP, Action.START) and container is not None and d.spec.enabled \
            and not stopped:
        # Labels can't change on a container: a new one from the same image carries this workspace's.
        return Step(name, Action.REDEPLOY, f"taking over from {owner}", d, container, None, revision)
    if owner:
        return Step(name, step.action, f"taking over from {owner}; {step.reason}", d, container, step.image, revision)
    return step


def _own_step(d: Desired, revision: str, observed: Observed, stopped: bool, container: Container | None) -> Step:
    name = d.name
    base = {"desired": d, "container": container, "revision": revision}
    if not d.spec.enabled:
        if container and container.running:
            return Step(name, Action.STOP, "disabled in its file (enabled: false)", **base)
        return Step(name, Action.NOOP, "disabled in its file (enabled: false)", **base)
    if stopped:
        return Step(name, Action.NOOP, "stopped by the operator (`kalpana start` resumes it)", **base)
    if container is None:
        image = _matching_image(d, revision, observed.images.get(name, []))
        if image is not None:
            return Step(name, Action.START, f"container is gone; recreating it from {image.tag}", image=image, **base)
        return Step(name, Action.CREATE, "not deployed yet", **base)

    deployed = container.field_hashes
    build_changes = [f"{f} changed" for f in BUILD_FIELDS if deployed.get(f) != d.hashes[f]]
    if container.revision != revision:
        build_changes.append(f"source {short_revision(container.revision)} -> {short_revision(revision)}")
    runtime_changes = [f"{f} changed" for f in RUNTIME_FIELDS if deployed.get(f) != d.hashes[f]]
    # The health check gates a deploy and does not change what runs: alone it redeploys nothing
    # (the running container passed its check already), but the plan says it changed.
    checked = container.labels.get(L.HEALTHCHECK_HASH)
    health_changed = checked is not None and checked != L.digest(d.spec.healthcheck.model_dump(mode="json"))
    also = ["healthcheck changed"] if health_changed else []
    if build_changes:
        return Step(name, Action.REBUILD, ", ".join(build_changes + runtime_changes + also), **base)
    if runtime_changes:
        return Step(name, Action.REDEPLOY, ", ".join(runtime_changes + also), **base)
    if not container.running:
        return Step(name, Action.START, f"container is {container.state} ({container.status})", **base)
    notes = [rollback_note(container), "healthcheck changed; applies to the next deploy" if health_changed else None]
    return Step(name, Action.NOOP, "; ".join(n for n in notes if n) or "up to date", **base)


def _matching_image(d: Desired, revision: str, images: list[Image]) -> Image | None:
    for image in images:
        if image.build_hash == d.build_hash and image.revision == revision and image.tag:
            return image
    return None
