"""schemathesis over /v1/openapi.json: generated requests, valid and not, never meet a server error."""

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow


@pytest.fixture
def api_schema(transactional_db, demo_home_template):
    from django.core.wsgi import get_wsgi_application

    from training.models import BaseModel

    # Real weights, so a generated request that names the base model is really answered.
    BaseModel.objects.create(name="attune-tiny", source=str(demo_home_template / "models" / "attune-tiny"))
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", get_wsgi_application())


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_meets_a_server_error(case, admin_key):
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_key}"}, checks=[not_a_server_error])
