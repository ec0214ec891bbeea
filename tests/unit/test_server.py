"""The webhook server, served by a real uvicorn on 127.0.0.1 and called over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn

from gitops import webhook as wh
from gitops.deliveries import Claim, Deliveries
from gitops.events import Events, Warned
from gitops.server.app import create_app

SECRET = "It's a Secret to Everybody"
REPO = "https://github.com/Octo-Org/Hello-World.git"
AFTER = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"
BEFORE = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
INSTANCE_SETTING = "webhook_secret in kalpana.yaml (or KALPANA_WEBHOOK_SECRET)"
DEPLOYMENT_FILE = "/srv/kalpana/deployments.d/"  # where FakeReceiver's files live: no answer may say it


def push_payload(ref: str = "refs/heads/main", **overrides) -> dict:
    """A push event as GitHub sends it (the fields Kalpana reads, and some it does not)."""
    payload = {
        "ref": ref, "before": BEFORE, "after": AFTER, "created": False, "deleted": False, "forced": False,
        "base_ref": None, "commits": [],
        "head_commit": {"id": AFTER, "message": "Ship it\n\nDetails.", "timestamp": "2024-05-01T12:00:00Z",
                        "author": {"name": "Mona", "email": "mona@example.com"}},
        "repository": {
            "id": 1296269, "name": "Hello-World", "full_name": "Octo-Org/Hello-World", "private": False,
            "html_url": "https://github.com/Octo-Org/Hello-World",
            "clone_url": "https://github.com/Octo-Org/Hello-World.git",
            "ssh_url": "git@github.com:Octo-Org/Hello-World.git",
            "git_url": "git://github.com/Octo-Org/Hello-World.git",
            "default_branch": "main",
        },
        "pusher": {"name": "octocat", "email": "mona@example.com"},
        "sender": {"login": "octocat", "id": 583231},
    }
    payload.update(overrides)
    return payload


@dataclass
class FakeReceiver:
    """The daemon's side of the app: secrets, targets, delivery ids (real file), and what was queued."""

    deliveries: Deliveries
    secrets: dict = field(default_factory=lambda: {None: SECRET, "web": SECRET})
    insecure: bool = False
    deployments: dict = field(default_factory=lambda: {
        "web": wh.Target("web", REPO, "main"),
        "docs": wh.Target("docs", REPO, "main", auto_rebuild=False),
        "other": wh.Target("other", "https://github.com/Octo-Org/Other.git", "main"),
    })
    config_repo: str | None = None
    pushes: list = field(default_factory=list)

    def secret_for(self, name):
        # The daemon's words once named the file: the app must not pass them on to callers.
        setting = INSTANCE_SETTING if name is None else f"webhook_secret in {DEPLOYMENT_FILE}{name}.yaml"
        return self.secrets.get(name), setting

    def known(self, name):
        return name in self.deployments

    def targets(self, name):
        if name is not None:
            return [self.deployments[name]]
        found = [wh.Target(None, self.config_repo, "main")] if self.config_repo else []
        return found + list(self.deployments.values())

    def claim_delivery(self, delivery):
        return self.deliveries.claim(delivery)

    def enqueue_push(self, work, push, delivery):
        self.pushes.append((work, push, delivery))


class Server:
    """A real uvicorn serving ``create_app(receiver)`` in a thread, on a port of its own."""

    def __init__(self, receiver: FakeReceiver, events: Events | None = None):
        self.receiver = receiver
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(receiver, events), log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "uvicorn died on start"
            assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
            time.sleep(0.01)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        assert not self.thread.is_alive(), "uvicorn did not stop"

    def post(self, path: str = "/webhook", payload: dict | None = None, *, event: str | None = "push",
             secret: str | None = SECRET, delivery: str | None = "auto", body: bytes | None = None,
             content_type: str = "application/json", signature: str | None = None,
             headers: dict | None = None) -> httpx.Response:
        """POST a delivery as GitHub does: signed raw body, event and delivery headers."""
        if body is None:
            raw = json.dumps(payload if payload is not None else push_payload())
            body = raw.encode() if content_type == "application/json" else urlencode({"payload": raw}).encode()
        sent = {"Content-Type": content_type, "User-Agent": "GitHub-Hookshot/abc1234"}
        if event is not None:
            sent[wh.EVENT_HEADER] = event
        if delivery == "auto":
            delivery = str(uuid.uuid4())
        if delivery is not None:
            sent[wh.DELIVERY_HEADER] = delivery
        if signature is None and secret is not None:
            signature = wh.sign(secret, body)
        if signature is not None:
            sent[wh.SIGNATURE_HEADER] = signature
        sent.update(headers or {})
        return self.client.post(path, content=body, headers=sent)


@pytest.fixture
def receiver(tmp_path: Path) -> FakeReceiver:
    return FakeReceiver(Deliveries(tmp_path / "deliveries.log"))


@pytest.fixture
def server(receiver):
    running = Server(receiver)
    yield running
    running.stop()


# -- the basics ---------------------------------------------------------------------


def test_health(server):
    response = server.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.parametrize("path", ["/webhook", "/api/deployments/web/webhook"])
def test_ping(server, path):
    response = server.post(path, {"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert response.status_code == 200
    assert server.receiver.pushes == []


@pytest.mark.parametrize("event", ["issues", "pull_request", "create", None])
def test_other_events_are_accepted_and_ignored(server, event):
    response = server.post(payload={"action": "opened"}, event=event)
    assert response.status_code == 202
    assert response.json()["ignored"] is True
    assert server.receiver.pushes == []


# -- signatures and secrets -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhook", "/api/deployments/web/webhook"])
@pytest.mark.parametrize("how", ["missing", "wrong-secret", "garbage", "other-body", "sha1"])
def test_bad_signature_is_401_and_nothing_runs(server, path, how):
    body = json.dumps(push_payload()).encode()
    if how == "missing":
        response = server.post(path, body=body, secret=None)
    elif how == "wrong-secret":
        response = server.post(path, body=body, secret="not the secret")
    elif how == "garbage":
        response = server.post(path, body=body, signature="sha256=nope")
    elif how == "other-body":
        response = server.post(path, body=body, signature=wh.sign(SECRET, body + b" "))
    else:
        response = server.post(path, body=body, signature="sha1=" + wh.sign(SECRET, body)[7:])
    assert response.status_code == 401
    assert wh.SIGNATURE_HEADER in response.json()["message"]
    assert server.receiver.pushes == []


def test_a_ping_needs_a_signature_too(server):
    assert server.post(payload={"zen": "x"}, event="ping", secret=None).status_code == 401


def test_a_bad_signature_does_not_burn_the_delivery_id(server):
    delivery = str(uuid.uuid4())
    assert server.post(delivery=delivery, secret="forged").status_code == 401
    response = server.post(delivery=delivery)  # GitHub's genuine delivery of the same id
    assert response.status_code == 202
    assert len(server.receiver.pushes) == 1


def test_instance_endpoint_without_a_secret_is_403_naming_the_setting(receiver):
    receiver.secrets = {"web": SECRET}
    server = Server(receiver)
    try:
        response = server.post(secret=None)
        assert response.status_code == 403
        assert "webhook_secret in kalpana.yaml" in response.json()["message"]
        assert server.post(secret="anything").status_code == 403  # signed or not: no secret, no entry
        assert receiver.pushes == []
        # The other endpoints still serve.
        assert server.post("/api/deployments/web/webhook").status_code == 202
    finally:
        server.stop()


def test_deployment_endpoint_without_a_secret_is_403_naming_the_setting_not_the_file(receiver):
    receiver.secrets = {None: SECRET}
    server = Server(receiver)
    try:
        response = server.post("/api/deployments/web/webhook", secret=None)
        assert response.status_code == 403
        assert "set webhook_secret in the deployment's file" in response.json()["message"]
        assert DEPLOYMENT_FILE not in response.text and ".yaml" not in response.text
        # An unknown name is not "a deployment without a secret": nothing can sign for it.
        assert server.post("/api/deployments/nope/webhook", secret=None).status_code == 401
        assert receiver.pushes == []
        assert server.post("/webhook").status_code == 202
    finally:
        server.stop()


def test_an_empty_secret_counts_as_no_secret(receiver):
    # `webhook_secret: ""` in kalpana.yaml or a deployment file must not make an HMAC key anyone can use.
    receiver.secrets = {None: "", "web": ""}
    server = Server(receiver)
    try:
        forged = server.post(secret="")
        assert forged.status_code == 403, (
            f"an empty webhook secret accepted a delivery signed with the empty key: {forged.status_code} "
            f"{forged.text}")
        assert receiver.pushes == []
    finally:
        server.stop()


def test_insecure_accepts_unsigned_deliveries_where_no_secret_is_set(receiver):
    receiver.secrets = {"web": SECRET}
    receiver.insecure = True
    server = Server(receiver)
    try:
        response = server.post(secret=None)
        assert response.status_code == 202
        assert response.json()["queued"] == ["web"]
        # Where a secret is set, it is still checked.
        assert server.post("/api/deployments/web/webhook", secret=None).status_code == 401
        assert len(receiver.pushes) == 1
        # An unknown name has no secret, but is not "a deployment without one": nothing matches it.
        unknown = server.post("/api/deployments/nope/webhook", secret=None)
        assert unknown.status_code == 401
        assert len(receiver.pushes) == 1
    finally:
        server.stop()


# -- pushes ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhook", "/api/deployments/web/webhook"])
def test_push_to_the_configured_branch_is_queued(server, path):
    delivery = str(uuid.uuid4())
    started = time.monotonic()
    response = server.post(path, delivery=delivery)
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    answer = response.json()
    assert answer["queued"] == ["web"]
    assert answer["commit"] == AFTER
    assert AFTER[:7] in answer["message"]
    assert elapsed < 1.0  # GitHub gives up after 10 s; the real target (100 ms) is the benchmark's
    [(work, push, got_delivery)] = server.receiver.pushes
    assert work.deployments == ["web"]
    assert push.after == AFTER and push.branch == "main"
    assert got_delivery == delivery


def test_push_reports_what_it_skipped(server):
    answer = server.post().json()
    assert answer["queued"] == ["web"]
    assert "docs" in answer["skipped"] and "auto_rebuild" in answer["skipped"]["docs"]
    assert "other" not in answer["skipped"]  # another repository is not worth a word


def test_push_to_the_config_repository(receiver):
    receiver.config_repo = "git@github.com:octo-org/hello-world.git"
    server = Server(receiver)
    try:
        answer = server.post().json()
        assert answer["queued"] == ["config repository", "web"]
        [(work, _, _)] = receiver.pushes
        assert work.config is True
    finally:
        server.stop()


def test_push_to_another_branch_is_ignored_with_a_reason(server):
    response = server.post(payload=push_payload("refs/heads/feature"))
    assert response.status_code == 202
    answer = response.json()
    assert answer["ignored"] is True
    assert "feature" in answer["message"] and "main" in answer["message"]
    assert "web" in answer["skipped"]
    assert server.receiver.pushes == []


def test_push_to_an_auto_rebuild_false_deployment_is_ignored(server):
    server.receiver.secrets["docs"] = SECRET
    response = server.post("/api/deployments/docs/webhook")
    assert response.status_code == 202
    assert response.json()["ignored"] is True
    assert "auto_rebuild" in response.json()["message"]
    assert server.receiver.pushes == []


def test_push_of_an_unfollowed_repository_is_ignored(server):
    payload = push_payload()
    payload["repository"] = {"full_name": "Someone/Else", "clone_url": "https://github.com/Someone/Else.git",
                             "default_branch": "main"}
    response = server.post(payload=payload)
    assert response.status_code == 202
    assert response.json()["ignored"] is True
    assert server.receiver.pushes == []


@pytest.mark.parametrize("payload", [
    pytest.param(push_payload("refs/tags/v1", base_ref="refs/heads/main"), id="tag"),
    pytest.param(push_payload("refs/heads/main", after="0" * 40, deleted=True, head_commit=None), id="deleted"),
    pytest.param(push_payload("refs/heads/main", after="0" * 40), id="after-zeros"),
])
def test_tag_pushes_and_deleted_branches_are_ignored(server, payload):
    response = server.post(payload=payload)
    assert response.status_code == 202
    answer = response.json()
    assert answer["ignored"] is True
    assert "tag" in answer["message"] or "deleted" in answer["message"]
    assert server.receiver.pushes == []


def test_a_signed_body_that_is_not_json_is_400(server):
    response = server.post(body=b"{not json")
    assert response.status_code == 400
    assert server.receiver.pushes == []


def test_form_encoded_delivery_is_accepted(server):
    response = server.post(content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202
    assert response.json()["queued"] == ["web"]
    assert response.json()["commit"] == AFTER
    assert len(server.receiver.pushes) == 1


def test_same_delivery_twice_builds_once(server):
    delivery = str(uuid.uuid4())
    first = server.post(delivery=delivery)
    second = server.post(delivery=delivery)  # while the first one's job waits or runs
    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert "already queued" in second.json()["message"]
    assert len(server.receiver.pushes) == 1
    server.receiver.deliveries.done([delivery])  # the job succeeded
    third = server.post(delivery=delivery)
    assert third.status_code == 200 and third.json()["duplicate"] is True
    assert "already handled" in third.json()["message"]
    assert len(server.receiver.pushes) == 1
    # Another delivery of the same push (a new id) is new work as far as the endpoint knows.
    assert server.post(delivery=str(uuid.uuid4())).status_code == 202
    assert len(server.receiver.pushes) == 2


@pytest.mark.parametrize(("job_succeeded", "after_restart", "pushes"), [
    pytest.param(True, 200, 1, id="built-it-builds-once"),
    pytest.param(False, 202, 2, id="never-ran-it-runs-after-the-restart"),
])
def test_redelivery_across_a_restart(receiver, tmp_path, job_succeeded, after_restart, pushes):
    """Only a delivery whose job succeeded is remembered across a restart; one never run is new work."""
    delivery = str(uuid.uuid4())
    first = Server(receiver)
    try:
        assert first.post(delivery=delivery).status_code == 202
    finally:
        first.stop()
    if job_succeeded:
        receiver.deliveries.done([delivery])
    receiver.deliveries = Deliveries(tmp_path / "deliveries.log")  # the daemon restarted
    second = Server(receiver)
    try:
        assert second.post(delivery=delivery).status_code == after_restart
    finally:
        second.stop()
    assert len(receiver.pushes) == pushes


def test_redelivery_of_a_push_whose_job_failed_runs_again(server):
    # GitHub's "Redeliver" button is how users retry a push whose build failed.
    delivery = str(uuid.uuid4())
    assert server.post(delivery=delivery).status_code == 202
    server.receiver.deliveries.release([delivery])  # its job failed
    again = server.post(delivery=delivery)
    assert again.status_code == 202, again.text
    assert again.json()["queued"] == ["web"]
    assert [d for _, _, d in server.receiver.pushes] == [delivery, delivery]


def test_only_a_new_delivery_is_claimed(server):
    # Pings, other events and ignored pushes leave the id alone: its real push still queues.
    delivery = str(uuid.uuid4())
    assert server.post(delivery=delivery, event="ping", payload={"zen": "x"}).status_code == 200
    assert server.post(delivery=delivery, payload=push_payload("refs/heads/feature")).json()["ignored"] is True
    assert server.receiver.deliveries.claim(delivery) is Claim.NEW


def test_deliveries_without_an_id_are_all_queued(server):
    assert server.post(delivery=None).status_code == 202
    assert server.post(delivery=None).status_code == 202
    assert len(server.receiver.pushes) == 2


# -- limits and routing ------------------------------------------------------------------


def test_body_over_the_limit_is_413_by_content_length(server, monkeypatch):
    monkeypatch.setattr(wh, "MAX_BODY", 1024)
    body = json.dumps(push_payload(padding="x" * 4096)).encode()
    response = server.post(body=body)
    assert response.request.headers["content-length"] == str(len(body))
    assert response.status_code == 413
    assert server.receiver.pushes == []


def test_body_over_the_limit_is_413_without_content_length(server, monkeypatch):
    monkeypatch.setattr(wh, "MAX_BODY", 1024)
    body = json.dumps(push_payload(padding="x" * 4096)).encode()

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    response = server.client.post("/webhook", content=chunks(), headers={
        "Content-Type": "application/json", wh.EVENT_HEADER: "push", wh.SIGNATURE_HEADER: wh.sign(SECRET, body)})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert server.receiver.pushes == []


def test_body_under_the_limit_passes(server, monkeypatch):
    body = json.dumps(push_payload()).encode()
    monkeypatch.setattr(wh, "MAX_BODY", len(body))
    assert server.post(body=body).status_code == 202


def test_the_real_limit_is_25_mb():
    assert wh.MAX_BODY == 25 * 1024 * 1024


@pytest.mark.parametrize("how", ["missing", "wrong-secret", "garbage", "signed-with-the-instance-secret"])
def test_an_unknown_deployment_answers_as_a_wrong_signature_does(server, how):
    """Names cannot be enumerated without the secret: an unknown one gets the very answer of a bad signature."""
    body = json.dumps(push_payload()).encode()
    kwargs = {"missing": {"secret": None}, "wrong-secret": {"secret": "not the secret"},
              "garbage": {"signature": "sha256=nope"}, "signed-with-the-instance-secret": {"secret": SECRET}}[how]
    known = server.post("/api/deployments/web/webhook", body=body,
                        **(kwargs if how != "signed-with-the-instance-secret" else {"secret": "not the secret"}))
    unknown = server.post("/api/deployments/nope/webhook", body=body, **kwargs)
    assert unknown.status_code == known.status_code == 401
    assert unknown.json() == known.json()
    assert "nope" not in unknown.text
    assert DEPLOYMENT_FILE not in known.text and ".yaml" not in known.text
    assert server.receiver.pushes == []


@pytest.mark.parametrize("path, how, why, deployment", [
    ("/api/deployments/web/webhook", "wrong-secret", "wrong X-Hub-Signature-256 signature", "web"),
    ("/api/deployments/web/webhook", "missing", "no X-Hub-Signature-256 signature", "web"),
    ("/api/deployments/nope/webhook", "wrong-secret", "no deployment named 'nope'", None),
    ("/webhook", "wrong-secret", "wrong X-Hub-Signature-256 signature", None),
    ("/api/deployments/docs/webhook", "no-secret", "no webhook secret configured", "docs"),
    ("/webhook", "not-json", "body is not JSON", None),
])
def test_each_refused_request_is_one_log_line_without_secrets(receiver, path, how, why, deployment):
    events, lines = Events(), []
    events.subscribe(lines.append)
    running = Server(receiver, events)
    try:
        body = json.dumps(push_payload()).encode()
        if how == "wrong-secret":
            response = running.post(path, body=body, secret="not the secret", delivery="d-1")
        elif how == "missing":
            response = running.post(path, body=body, secret=None, delivery="d-1")
        elif how == "no-secret":
            response = running.post(path, body=body, secret=None, delivery="d-1")
        else:
            response = running.post(path, body=b"{not json", delivery="d-1")
        accepted = running.post("/api/deployments/web/webhook", push_payload())  # logs nothing
    finally:
        running.stop()
    assert response.status_code in (400, 401, 403) and accepted.status_code == 202
    [line] = lines
    assert isinstance(line, Warned) and line.deployment == deployment, line
    assert line.message.startswith(f"refused POST {path} from 127.0.0.1 with {response.status_code}: "), line
    assert why in line.message and line.message.endswith("(delivery d-1)"), line
    sent = wh.sign("not the secret", body)
    assert SECRET not in line.message and "not the secret" not in line.message and sent not in line.message
    assert DEPLOYMENT_FILE not in line.message


def test_a_refusal_line_stays_one_line_whatever_the_caller_sends(receiver):
    events, lines = Events(), []
    events.subscribe(lines.append)
    running = Server(receiver, events)
    try:
        running.post("/api/deployments/x%0Aforged%20line/webhook", push_payload(), secret="wrong",
                     delivery="a\tb" + "z" * 500)
    finally:
        running.stop()
    [line] = lines
    assert "\n" not in line.message and "\t" not in line.message and len(line.message) < 500, line.message
    assert "named 'x\\nforged line'" in line.message, line.message


def test_get_on_a_webhook_is_not_allowed(server):
    assert server.client.get("/webhook").status_code == 405
