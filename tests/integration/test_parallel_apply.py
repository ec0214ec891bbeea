"""Applies whose steps run side by side (``parallelism``) on the real engine.

A first apply of six deployments three at a time serves them all, each with its own record and
log; Ctrl-C (SIGINT to the `kalpana apply` process) while three rebuilds are in flight cancels
every one of them: records CANCELLED, the old containers serving, no image or container of the
cancelled builds left behind.
"""

from __future__ import annotations

import signal

from .helpers import builds, containers, finish, get, host_port, image_tags, spawn, wait_for_status, web_spec

SIX = [f"par{i}" for i in range(6)]


def test_first_apply_of_six_with_parallelism_3_serves_all_with_their_own_records(kalpana_project):
    p = kalpana_project
    p.write_config(parallelism=3)
    for name in SIX:
        p.write_app(name, {"index.html": f"hello from {name}"})
        p.write_deployment(name, web_spec(name, build_command=f"echo building {name}"))

    result = p.run("apply")

    text = result.stdout + result.stderr
    ports = {}
    for name in SIX:
        ports[name] = host_port(p, name)
        assert get(p, ports[name]) == f"hello from {name}"
        [record] = builds(p, name)
        assert record["status"] == "SUCCESS" and record["deployment"] == name, record
        log = p.run("logs", name, "--build", record["id"]).stdout
        assert f"building {name}" in log, log
        assert all(f"building {other}" not in log for other in SIX if other != name), f"{name}'s log:\n{log}"
        # Every line about a deployment names it: readable although six steps interleave.
        assert f"OK {name} " in text or f"OK {name}\n" in text, text
    assert len(set(ports.values())) == len(SIX), f"two deployments share a host port: {ports}"


def test_ctrl_c_during_a_parallel_apply_cancels_every_build_in_flight(kalpana_project):
    p = kalpana_project
    p.write_config(parallelism=3)
    names = SIX[:3]
    for name in names:
        p.write_app(name, {"index.html": "v1"})
        p.write_deployment(name, web_spec(name))
    p.run("apply")
    before = {name: (containers(p, name)[0].id, host_port(p, name), image_tags(p, name)) for name in names}

    for name in names:
        p.write_app(name, {"index.html": "v2"})
        # A silent build step: no output line gives the worker a checkpoint; the cancel must still land.
        p.write_deployment(name, web_spec(name, build_command="sleep 60"))
    process = spawn(p, "apply")
    stuck = {name: wait_for_status(p, name, "BUILDING", process)["id"] for name in names}
    process.send_signal(signal.SIGINT)
    code, text = finish(process, timeout=60)

    assert code == 130, f"exit {code}:\n{text}"
    for name in names:
        assert f"{name}: " in text and "cancelled" in text, text
        record = builds(p, name)[0]
        assert record["id"] == stuck[name] and record["status"] == "CANCELLED", record
        old_id, port, tags = before[name]
        [container] = containers(p, name)  # no candidate, no retired leftover: the old one only
        assert container.id == old_id and container.status == "running"
        assert get(p, port) == "v1"
        assert image_tags(p, name) == tags, "no image of a cancelled build"
