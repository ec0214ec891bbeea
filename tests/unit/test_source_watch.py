"""Which source directories `kalpana watch` watches, and which deployments a saved file rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops.source_watch import SourceDirs
from gitops.spec import Deployment, Desired


def desired(name: str, source: str | dict | None, **fields) -> Desired:
    data = {"name": name, "start_command": "run", "image": "base", **fields}
    if source is not None:
        data["source"] = source
    spec = Deployment.model_validate(data)
    return Desired(spec, f"deployments.d/{name}.yaml", 1, image=spec.image, env={})


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    for rel in ("apps/hello", "apps/api", "apps/hello/docs", "state", "other"):
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
    return tmp_path.resolve()


def dirs(workspace: Path, *deployments: Desired) -> SourceDirs:
    return SourceDirs.of(deployments, workspace, workspace / "state")


def test_each_local_source_is_watched_once_and_nested_ones_through_their_parent(workspace):
    sources = dirs(workspace, desired("hello", "apps/hello"), desired("twin", "apps/hello"),
                   desired("docs", "apps/hello/docs"), desired("api", {"path": "apps/api"}),
                   desired("remote", {"repo": "https://example.com/r.git"}), desired("bare", None))
    assert sources.roots() == {workspace / "apps/hello", workspace / "apps/api"}
    assert sources.owners[workspace / "apps/hello"] == {"hello", "twin"}


def test_a_disabled_deployment_and_a_missing_directory_are_not_watched(workspace):
    sources = dirs(workspace, desired("off", "apps/hello", enabled=False), desired("gone", "apps/missing"))
    assert sources.roots() == frozenset()
    assert sources.owners_of([workspace / "apps/hello/index.html"]) == set()


def test_a_saved_file_rebuilds_only_the_deployments_whose_source_contains_it(workspace):
    sources = dirs(workspace, desired("hello", "apps/hello"), desired("docs", "apps/hello/docs"),
                   desired("api", "apps/api"))
    assert sources.owners_of([workspace / "apps/api/main.py"]) == {"api"}
    assert sources.owners_of([workspace / "apps/hello/index.html"]) == {"hello"}
    assert sources.owners_of([workspace / "apps/hello/docs/a.md"]) == {"hello", "docs"}
    assert sources.owners_of([workspace / "other/x", workspace / "apps/helloworld/x"]) == set()


@pytest.mark.parametrize("rel", [
    "apps/hello/node_modules/left-pad/index.js",
    "apps/hello/.git/index",
    "apps/hello/.git",
    "apps/hello/src/__pycache__/m.cpython-312.pyc",
    "apps/hello/.venv/bin/python",
    "apps/hello/.index.html.swp",
    "apps/hello/index.html~",
    "apps/hello/4913",
    "apps/hello/.#index.html",
])
def test_dependency_vcs_cache_and_editor_files_trigger_nothing(workspace, rel):
    sources = dirs(workspace, desired("hello", "apps/hello"))
    assert not sources.relevant(workspace / rel)
    assert sources.owners_of([workspace / rel]) == set()


def test_the_state_directory_inside_a_whole_workspace_source_triggers_nothing(workspace):
    sources = dirs(workspace, desired("all", "."))
    assert sources.roots() == {workspace}
    assert sources.owners_of([workspace / "state/history.json", workspace / "state/logs/b1.log"]) == set()
    assert sources.owners_of([workspace / "apps/api/main.py"]) == {"all"}


def test_ignored_names_above_the_source_do_not_hide_it(tmp_path):
    # A workspace that itself lives under such a directory (a checkout inside a venv, say) still counts.
    workspace = tmp_path / ".venv" / "project"
    (workspace / "app").mkdir(parents=True)
    sources = dirs(workspace.resolve(), desired("app", "app"))
    assert sources.owners_of([workspace.resolve() / "app/index.html"]) == {"app"}


def test_the_log_names_the_files_relative_to_their_source(workspace):
    sources = dirs(workspace, desired("hello", "apps/hello"))
    files = [workspace / f"apps/hello/{n}.html" for n in "abcde"] + [workspace / "apps/hello/.git/x"]
    assert sources.describe(files) == "a.html, b.html, c.html and 2 more"


def test_sources_in_the_config_repositorys_checkout_are_not_watched(workspace):
    # With `repo:` in kalpana.yaml the workspace is the checkout, under the state directory.
    checkout = workspace / "state" / "config-repo"
    (checkout / "apps/web").mkdir(parents=True)
    sources = SourceDirs.of([desired("web", "apps/web")], checkout, workspace / "state")
    assert sources.roots() == frozenset()


@pytest.mark.parametrize("junk", ["index.html.swp", ".index.html.swx", "index.html~", "4913", ".#index.html",
                                  "app.pyc", "__pycache__/app.cpython-311.pyc", ".pytest_cache/v/x", ".git/HEAD"])
def test_what_watch_ignores_as_churn_the_content_hash_ignores_too(tmp_path: Path, junk: str):
    # Otherwise `plan` says "rebuild" for a change `watch` never acts on (or the other way round).
    from gitops.source import content_hash

    (tmp_path / "index.html").write_text("v1")
    before = content_hash(tmp_path)
    (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / junk).write_text("churn")
    dirs = SourceDirs({tmp_path: frozenset({"web"})})
    assert not dirs.relevant(tmp_path / junk)
    assert content_hash(tmp_path) == before


def test_a_dependency_directory_is_not_watched_but_still_counts_in_the_hash(tmp_path: Path):
    # `npm install` rewrites thousands of files: not an edit to act on at once, but the next apply builds it.
    from gitops.source import content_hash

    (tmp_path / "index.js").write_text("v1")
    before = content_hash(tmp_path)
    (tmp_path / "node_modules").mkdir()
    (tmp_path / "node_modules" / "dep.js").write_text("x")
    assert not SourceDirs({tmp_path: frozenset({"web"})}).relevant(tmp_path / "node_modules" / "dep.js")
    assert content_hash(tmp_path) != before
