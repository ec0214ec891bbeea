"""Schema fuzzing: schemathesis generates requests from /openapi.json of a running daemon.

Every operation gets a bounded number of generated requests (valid ones,
then invalid ones) over real HTTP: no answer may be a 500, and every answer must
match what the schema says it sends (status, content type, body).
"""

from __future__ import annotations

import itertools

import hypothesis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from .daemon_helpers import start_daemon
from .helpers import HTTPD

__all__ = ["start_daemon"]

TOKEN = "fuzz-token"
EXAMPLES = 40  # per operation and mode (valid, invalid): under a minute for the whole schema here
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


def test_no_500_and_no_schema_violation(kalpana_project, start_daemon):
    p = kalpana_project
    p.write_app("web", {"index.html": "v1"})
    p.write_deployment("web", {"name": "web", "source": "web", "start_command": HTTPD, "port": 8080,
                               "healthcheck": {"timeout": 5}})
    daemon = start_daemon(api_token=TOKEN)
    schema = schemathesis.openapi.from_url(f"{daemon.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11, [op.label for op in operations]
    failures = []
    for operation, mode in itertools.product(operations, GenerationMode):
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.explicit,
                                                                   hypothesis.Phase.generate])
        def run(case) -> None:
            case.call_and_validate(base_url=daemon.base_url, headers=headers, checks=CHECKS, timeout=60)

        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong (GET /healthz)
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
