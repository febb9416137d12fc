"""The OpenAPI document, driven by schemathesis against the in-process app with an admin key.

Every operation but the two SSE streams gets a bounded number of generated requests (a fixed
seed: the same cases every run; IOT_TEST_SCHEMATHESIS_EXAMPLES and _SEED explore further). The specification: no request, however odd, makes the
platform answer 5xx, and every documented answer matches its documented schema. A few objects
exist first (device ``d1``, a rule, a gateway) so the generated requests reach past 404.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.e2e.platform_process import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SSE = ("/api/devices/{device_id}/stream", "/api/alerts/stream")
EXAMPLES = int(os.environ.get("IOT_TEST_SCHEMATHESIS_EXAMPLES", "25"))
SEED = int(os.environ.get("IOT_TEST_SCHEMATHESIS_SEED", "0"))
"""A seed of our own, not hypothesis' derandomized one (which follows the test's source code,
so editing a comment here would change every case)."""


@pytest.fixture
def api_schema(app_in_tmp: FastAPI) -> Iterator[tuple[schemathesis.BaseSchema, dict[str, str]]]:
    """The app started (its lifespan on schemathesis' own event loop) and seeded; its schema,
    and the path parameters that name the seeded objects."""
    with asgi.get_client(app_in_tmp) as client:
        client.headers.update(ADMIN)
        assert client.post("http://testserver/api/devices", json={"device_id": "d1", "device_type": "thermostat"}).status_code == 201
        rule = client.post("http://testserver/api/analytics/rules",
                           json={"device_id": "d1", "metric": "temperature", "op": ">", "threshold": 30})
        assert rule.status_code == 201, rule.text
        gateway = client.post("http://testserver/api/lorawan/gateways", json={"gateway_eui": "aa555a0000000000"})
        assert gateway.status_code == 201, gateway.text
    schema = schemathesis.openapi.from_asgi("/openapi.json", app_in_tmp)
    schema.config.generation.update(max_examples=EXAMPLES, deterministic=True)
    seeded = {"device_id": "d1", "rule_id": rule.json()["id"], "gateway_eui": "aa555a0000000000"}
    try:
        yield schema.exclude(path=list(SSE)), seeded
    finally:
        asgi.shutdown_lifespans()


def test_no_request_makes_a_server_error_or_breaks_the_documented_schema(
    api_schema: tuple[schemathesis.BaseSchema, dict[str, str]],
) -> None:
    """Each operation on its own hypothesis run (schemathesis' pytest plugin, ``from_fixture``,
    does not run under pytest 9), every failure gathered so one run shows them all."""
    # Given every operation of the document, and the seeded objects' ids
    schema, seeded_ids = api_schema
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40  # the document was read whole
    for operation in operations:

        @seed(SEED)
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def judged(case: schemathesis.Case) -> None:
            # When a generated request is sent as the admin, on the seeded objects
            seeded = {name: seeded_ids[name] for name in case.path_parameters or {} if name in seeded_ids}
            case.path_parameters = {**(case.path_parameters or {}), **seeded}
            # Then the answer is no 5xx, and matches the schema documented for its status
            case.call_and_validate(headers=ADMIN, checks=[not_a_server_error, response_schema_conformance])

        try:
            judged()
        except Exception as failure:  # noqa: BLE001  # gathered, reported together below
            failures[operation.label] = "".join(traceback.format_exception(failure))[-3000:]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
