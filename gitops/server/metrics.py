"""`GET /metrics`: the daemon's figures in Prometheus text format (prometheus-client lives here only).

Counters and histograms are fed as builds end and deliveries arrive; queue
depth and deployments by state are read when Prometheus scrapes, so they
are never stale. One registry per app: two apps in one process (tests)
never share or clash.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from gitops.build import Build

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a busybox image builds in one, a real app in minutes.
_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The daemon's Prometheus metrics; ``queue_depth`` and ``states`` are read at each scrape."""

    def __init__(self, queue_depth: Callable[[], int], states: Callable[[], Iterable[str]],
                 followers: Callable[[], int] = lambda: 0):
        self.registry = CollectorRegistry()
        self.builds = Counter("kalpana_builds", "Builds that ended, by status", ["status"], registry=self.registry)
        self.build_seconds = Histogram("kalpana_build_duration_seconds", "Time spent building images",
                                       buckets=_BUCKETS, registry=self.registry)
        self.deploy_seconds = Histogram("kalpana_deploy_duration_seconds",
                                        "Time from starting a new container to serving from it",
                                        buckets=_BUCKETS, registry=self.registry)
        self.deliveries = Counter("kalpana_webhook_deliveries", "Webhook deliveries, by outcome", ["outcome"],
                                  registry=self.registry)
        self.registry.register(_Scraped(queue_depth, states, followers))

    def build_ended(self, build: Build) -> None:
        """Count a build that ended here, with its durations."""
        self.builds.labels(status=build.status.value).inc()
        if "build" in build.durations and build.durations["build"] > 0:
            self.build_seconds.observe(build.durations["build"])
        if "deploy" in build.durations:
            self.deploy_seconds.observe(build.durations["deploy"])

    def delivery(self, outcome: str) -> None:
        """Count a webhook delivery: queued, ignored, duplicate, ping or rejected."""
        self.deliveries.labels(outcome=outcome).inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _Scraped:
    """Gauges computed at scrape time."""

    def __init__(self, queue_depth: Callable[[], int], states: Callable[[], Iterable[str]],
                 followers: Callable[[], int]):
        self._depth = queue_depth
        self._states = states
        self._followers = followers

    def describe(self):
        return []  # computed at collect time; registering must not call the daemon

    def collect(self):
        depth = GaugeMetricFamily("kalpana_queue_depth", "Jobs running or waiting in the work queue")
        depth.add_metric([], self._depth())
        yield depth
        followers = GaugeMetricFamily("kalpana_log_stream_clients", "Clients following a build's log stream now")
        followers.add_metric([], self._followers())
        yield followers
        by_state = GaugeMetricFamily("kalpana_deployments", "Deployments, by state", labels=["state"])
        try:
            counts = Tally(self._states())
        except Exception:  # noqa: BLE001 - Docker or the files unreadable: the other figures still matter
            counts = Tally()
        for state in ("running", "crash-looping", "stopped", "failed", "building", "not deployed"):
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
