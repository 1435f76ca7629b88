"""schemathesis over /v1/openapi.json: generated requests, valid and not, never meet a server error."""

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 10


def test_no_generated_request_meets_a_server_error(transactional_db, demo_home_template, admin_key):
    from django.core.wsgi import get_wsgi_application

    from training.models import BaseModel

    # Real weights, so a generated request that names the base model is really answered.
    BaseModel.objects.create(name="attune-tiny", source=str(demo_home_template / "models" / "attune-tiny"))
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())
    headers = {"Authorization": f"Bearer {admin_key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 36

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        run()
