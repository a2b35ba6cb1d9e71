"""The API's OpenAPI document, fuzzed by schemathesis against the real stack (worker, projector,
API, broker, database), with a valid token and with missing, forged and expired ones.

Whatever is sent: no 5xx; errors are problem+json; without a valid token a refusal (401, or
a 400/413/422 about an unreadable body, which FastAPI checks first) and never data;
and a tenant's caller never sees a byte of another tenant's request, even when the generated
call is aimed at that request's id.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient
from harness import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from test_api import (  # noqa: F401 - signing_key: a fixture
    auth,
    make_token,
    running_stack,
    signing_key,
    tenant_body,
)

from api.auth import ALL_PERMISSIONS, OPERATE
from consumer.participants.builtin.registry import add_entity
from provisioning.devservices.signing_key import DevSigningKey
from provisioning.settings import Settings

PREFIX = "/api/v1/provisioning"
CALLER_TENANT = "acme"
STATUSES: Counter[int] = Counter()  # of every call made, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def fuzz_stack(base_settings: Settings, kafka_admin: AdminClient, migrated: sa.Engine,
               tmp_path_factory: pytest.TempPathFactory,
               signing_key: DevSigningKey) -> Iterator[dict]:  # noqa: F811
    """A stack of this module's own, with one finished request of another tenant, globex."""
    settings = base_settings.model_copy(
        update={"topic_prefix": f"{base_settings.topic_prefix}.fz{uuid.uuid4().hex[:8]}"})
    with running_stack(settings, kafka_admin, tmp_path_factory.mktemp("fuzz"), signing_key,
                       max_wait_s=0.5) as (url, api):
        globex = _globex_request(url, migrated, signing_key)
        yield {"url": url, "globex": globex, "api": api, "settings": settings}


def _globex_request(url: str, engine: sa.Engine, key: DevSigningKey) -> dict[str, str]:
    """A tenant request of globex's, run to its end, and the strings that would betray it."""
    entity = f"globex-{uuid.uuid4().hex[:8]}"
    add_entity(engine, entity, "Globex")
    bearer = make_token(key, subject="grace", tenant="globex")
    body = tenant_body(entity, tenantName="Globex Secret Name")
    answer = httpx.post(f"{url}{PREFIX}/tenant", json=body, headers=auth(bearer, "globex"))
    assert answer.status_code == 202, answer.text
    request_id = answer.json()["requestId"]

    def finished() -> dict | None:
        status = httpx.get(f"{url}{PREFIX}/{request_id}/status",
                           headers=auth(bearer, "globex")).json()
        return status if status.get("status") == "COMPLETED" else None

    status = wait_until(finished, 60, "globex's tenant provisioned")
    return {"request_id": request_id, "entity": entity, "name": "Globex Secret Name",
            "tenant": status["resourceId"]}


@pytest.fixture(scope="module")
def operations(fuzz_stack: dict) -> list[APIOperation]:
    schema = schemathesis.openapi.from_url(f"{fuzz_stack['url']}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture(scope="module")
def bearers(signing_key: DevSigningKey, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
            ) -> dict[str, str | None]:
    stranger = DevSigningKey(tmp_path_factory.mktemp("stranger") / "auth").ensure()
    caller = tuple(p for p in ALL_PERMISSIONS if p != OPERATE)
    return {
        "valid": make_token(signing_key, tenant=CALLER_TENANT, permissions=caller),
        "missing": None,
        "garbage": "not-a-jwt",
        "forged": make_token(stranger, tenant=CALLER_TENANT),
        "expired": make_token(signing_key, tenant=CALLER_TENANT, permissions=caller,
                              ttl_s=-3600),
    }


def test_no_5xx_no_401_bypass_and_no_other_tenants_data(
    operations: list[APIOperation], fuzz_stack: dict, bearers: dict[str, str | None],
) -> None:
    assert len(operations) >= 11, [o.label for o in operations]
    for operation in operations:
        cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                          operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def calls_of(case: schemathesis.Case) -> None:
            check_calls(case, fuzz_stack, bearers)

        calls_of()
    print(f"\napi fuzz: {STATUSES.total()} calls, by status {dict(sorted(STATUSES.items()))}")
    # Nothing secret in the API's log: no token (valid or not), no database password.
    log = fuzz_stack["api"].log_text()
    password = sa.make_url(fuzz_stack["settings"].database_url_plain()).password
    assert password and password not in log
    assert not [name for name, bearer in bearers.items() if bearer and bearer in log]


def check_calls(case: schemathesis.Case, fuzz_stack: dict, bearers: dict[str, str | None]
                ) -> None:
    """The case with each token. With the valid one also as the caller's own tenant (the
    generated X-Tenant-ID mostly is not), and aimed at globex's request when it names one."""
    # globex's data; its request id is not among them: a 404 may name the id it was asked for.
    secrets = [v for k, v in fuzz_stack["globex"].items() if k != "request_id"]
    generated = dict(case.path_parameters or {})
    for name, bearer in bearers.items():
        headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        variants = [(generated, headers, False)]
        if name == "valid":
            own = {**headers, "X-Tenant-ID": CALLER_TENANT}
            variants.append((generated, own, False))
            if "request_id" in generated:
                at_globex = {**generated, "request_id": fuzz_stack["globex"]["request_id"]}
                variants.append((at_globex, own, True))
        for path_parameters, sent, at_globex in variants:
            case.path_parameters = path_parameters
            response = case.call(base_url=fuzz_stack["url"], headers=sent, timeout=10)
            STATUSES[response.status_code] += 1
            what = f"{case.method} {case.formatted_path} with a {name} token"
            assert response.status_code < 500, f"{what}: {response.status_code} {response.text}"
            if name != "valid":
                # Refused: 401, or before authentication a body that cannot be read at all
                # (400, or 422 naming only the body) or is too large (413).
                assert response.status_code in (400, 401, 413, 422), f"{what}: {response.text}"
                if response.status_code == 422:
                    fields = [e["field"] for e in response.json()["errors"]]
                    assert all(f.startswith("body") for f in fields), f"{what}: {fields}"
            if at_globex:
                assert response.status_code >= 400, f"{what} at globex's request: {response.text}"
            if response.status_code >= 400:
                kind = response.headers.get("content-type", [""])
                assert "application/problem+json" in str(kind), f"{what}: {kind}"
            for secret in secrets:
                assert secret not in response.text, f"{what}: globex's {secret!r} leaked"
    case.path_parameters = generated
    assert fuzz_stack["api"].alive()
