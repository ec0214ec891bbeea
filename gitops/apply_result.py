"""What an apply came to: its plan, what each executed step did, and what could not be fetched.

A plain value: the CLI prints it (``--json``), the worker sends it to the daemon
as its result line, the API will return it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gitops.build import Build
from gitops.loader import LoadResult
from gitops.plan import Plan, Step


@dataclass
class Outcome:
    """What one executed step came to."""

    step: Step
    ok: bool
    build: Build | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON form: the step, ok, the error and the build record."""
        return {**self.step.to_dict(), "ok": self.ok, "error": self.error,
                "build": self.build.to_dict() if self.build else None}


@dataclass
class ApplyResult:
    """A plan and what executing it did."""

    plan: Plan
    load: LoadResult
    outcomes: list[Outcome] = field(default_factory=list)
    # What could not be fetched (deployment names, or CONFIG_REPOSITORY): the run went on with the
    # last good checkout, so it did not deploy what a push or poll asked for.
    unfetched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every file loaded and every executed step succeeded."""
        return self.load.ok and all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict:
        """JSON form (`apply --json`, the worker's result line)."""
        return {"ok": self.ok, "plan": self.plan.to_dict(), "errors": [str(e) for e in self.load.errors],
                "results": [o.to_dict() for o in self.outcomes], "unfetched": list(self.unfetched)}
