"""Every operation of /openapi.json fuzzed by schemathesis, with the admin token and without:
no 5xx, responses conform to the spec, and every status answered is one the spec documents.
Bounded: a few examples per operation."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from catalog.catalog import Catalog

FUZZ = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "anonymous"])
def test_no_operation_fails_or_answers_off_spec(
    catalog: Catalog, token: str, submitted, authenticated: bool
) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", create_app(catalog))
    headers = {"Authorization": f"Bearer {token}"} if authenticated else {}
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @FUZZ
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            # positive_data_acceptance wants 2xx for any id the spec's plain strings allow; ids
            # are refused by their content (malformed.parameter, a documented 400), so it is off
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        try:
            fuzz()
        except BaseException as exc:  # noqa: BLE001 - gathered: every operation is tried
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    assert operations > 30
    assert not failures, "\n\n".join(failures)
