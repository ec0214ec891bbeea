"""Housekeeping around an apply: repairing what an interrupted run left, and pruning what is old.

Runs under the apply lock, before the plan (``recover``) and after the steps
(``prune_images``, ``prune_history``). Pruning is best effort: a failure is a
warning, never a failed build or apply.
"""

from __future__ import annotations

from gitops import labels as L
from gitops.config import Settings
from gitops.errors import KalpanaError
from gitops.events import Events, Recovered, Warned
from gitops.history import History
from gitops.runtime.objects import Observed
from gitops.runtime.protocol import Runtime


class Housekeeping:
    """Repairs and prunes one instance's containers, images and build history."""

    def __init__(self, runtime: Runtime, history: History, settings: Settings, events: Events):
        self.runtime = runtime
        self.history = history
        self.settings = settings
        self.instance = settings.instance
        self.events = events

    def prune_images(self, name: str, keep: int) -> None:
        """Keep the newest ``keep`` images of a deployment (rollback targets); older ones go.

        Housekeeping after a recorded success: a failure here is a warning, never a failed build.
        """
        try:
            self._remove_old_images(name, keep)
        except KalpanaError as exc:
            self.events.emit(Warned(name, f"could not remove old images: {exc}"))

    def _remove_old_images(self, name: str, keep: int) -> None:
        observed = self.runtime.observe(self.instance)
        in_use = {c.image for c in observed.containers.values()} | {c.image for c in observed.extra}
        for image in observed.images.get(name, [])[keep:]:
            if image.tag not in in_use and image.id not in in_use:
                self.runtime.remove_image(image.id)

    def prune_history(self, observed: Observed | None) -> None:
        """Keep ``keep_builds`` records per deployment, and every record a container or a kept image names.

        Housekeeping under the apply lock: a failure here is a warning, never a failed apply.
        """
        try:
            observed = observed or self.runtime.observe(self.instance)
            protect = {c.build_id for c in [*observed.containers.values(), *observed.extra] if c.build_id}
            for images in observed.images.values():
                protect.update(i.build_id for i in images[:self.settings.keep_images] if i.build_id)
            self.history.prune(self.settings.keep_builds, protect)
        except (KalpanaError, OSError) as exc:
            self.events.emit(Warned(None, f"could not prune the build history: {exc}"))

    def recover(self) -> Observed:
        """Repair what an interrupted run left (BUILDING records, half-swapped containers); returns the observation."""
        for build in self.history.mark_interrupted():
            self.events.emit(Recovered(build.deployment, f"build {build.id} was interrupted (process gone); marked FAILED"))
        observed = self.runtime.observe(self.instance)
        everything = list(observed.containers.values()) + observed.extra
        # A drained container (subdomain mode) is no longer routed: removed like a trial, never restored.
        trials = [c for c in everything if c.trial or c.draining]
        for trial in trials:
            # A deploy died while proving its new version beside the old one, which it had not touched yet.
            self.runtime.remove(trial.id)
            self.events.emit(Recovered(trial.deployment, f"removed {trial.name}, the trial container of an "
                                       "interrupted deploy"))
        everything = [c for c in everything if not c.trial]
        retiring = [c for c in everything if c.retiring]
        for old in retiring:
            # A swap died half-way: the successor (if any) never proved healthy, so the old one serves again.
            for successor in everything:
                if successor.deployment == old.deployment and not successor.retiring:
                    self.runtime.remove(successor.id)
            self.runtime.rename(old.id, L.container_name(self.instance, old.deployment))
            if not old.running:
                self.runtime.start(old.id)
            self.events.emit(Recovered(old.deployment, f"restored {old.name} after an interrupted deploy"))
        repaired = bool(retiring or trials)
        return self.runtime.observe(self.instance) if repaired else observed
