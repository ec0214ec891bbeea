"""A real `kalpana apply` that builds nothing never imports the docker SDK (issue 12).

`python -X importtime` lists every module the process imported on stderr: a no-op apply and a
redeploy-only apply (env change) must do their Docker work over the socket client alone.
"""

from __future__ import annotations

import re

import yaml

from tests.integration.helpers import deploy_web, get, plan_steps

#: Packages an apply that builds nothing must not load.
NOT_NEEDED = {"docker", "requests", "urllib3"}


def _apply_imports(project) -> tuple[set[str], str]:
    result = project.run("apply", env={"PYTHONPROFILEIMPORTTIME": "1"})
    modules = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)\s*$", result.stderr, re.M)}
    assert "gitops" in modules, result.stderr[-2000:]  # importtime did report
    return modules, result.stdout


def test_noop_and_redeploy_apply_do_not_import_the_docker_sdk(kalpana_project):
    project = kalpana_project
    port = deploy_web(project, "web", "v1", env={"REV": "1"})

    modules, out = _apply_imports(project)
    assert "0 changed, 0 failed, 1 unchanged" in out
    assert modules & (NOT_NEEDED | {"rich"}) == set()

    project.write_deployment("web", {**_spec(project), "env": {"REV": "2"}})
    assert plan_steps(project)["web"]["action"] == "redeploy"
    modules, out = _apply_imports(project)
    assert "OK web redeploy" in out, out
    assert modules & NOT_NEEDED == set()
    assert get(project, port) == "v1"
    assert "REV=2" in project.container("web").attrs["Config"]["Env"]


def _spec(project) -> dict:
    return yaml.safe_load((project.deployments_dir / "web.yaml").read_text())

