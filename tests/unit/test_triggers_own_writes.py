"""The file watcher's side of the API's create: the daemon's own write is not a second change to apply.

Real settings, files, history and work queue (never started: submitted jobs wait in it); the
watcher's batch of changed paths is handed to ``_files_changed`` as watchfiles would.
"""

from __future__ import annotations

import threading
from pathlib import Path

import yaml

from gitops.config import Settings
from gitops.events import Events
from gitops.history import History
from gitops.queue import WorkQueue
from gitops.triggers import Triggers

SITE = {"name": "made", "image": "busybox", "start_command": "httpd -f -p 8080", "port": 8080}


def _triggers(tmp_path: Path) -> Triggers:
    (tmp_path / "deployments.d").mkdir()
    settings = Settings(instance="unit", deployments_dir=tmp_path / "deployments.d", workspace=tmp_path,
                        state_dir=tmp_path / "state", config_dir=tmp_path)
    return Triggers(settings, None, None, History(settings.state_path), Events(), WorkQueue(lambda running: None),
                    threading.Event())


def test_a_file_the_daemon_wrote_is_not_applied_again_but_a_later_edit_is(tmp_path: Path) -> None:
    triggers = _triggers(tmp_path)
    path = (tmp_path / "deployments.d" / "made.yaml").resolve()
    with triggers.writing(path):
        path.write_text(yaml.safe_dump(SITE))
        triggers._files_changed({path})  # the event may come while the API still checks the file
    triggers.reload()  # as the API does after its create
    triggers._files_changed({path})  # or after
    assert triggers.work._pending is None
    path.write_text(yaml.safe_dump({**SITE, "description": "edited"}))
    triggers._files_changed({path})
    job = triggers.work._pending
    assert job is not None and job.names == {"made"}

