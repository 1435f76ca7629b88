"""Model graders judged by an external OpenAI-compatible endpoint: here the studio's own /v1, served by
pytest-django's live server, so the request, its key and its answer are all real."""

import pytest

from evals.judges import StudioJudge
from evals.models import JudgeEndpoint
from evals.requests import judge_exists
from graders import run_grader, validate_grader

pytestmark = pytest.mark.django_db(transaction=True)

GRADER = {"type": "score_model", "name": "judge", "model": "self/tiny", "range": [0, 10],
          "input": [{"role": "user", "content": "Rate this answer from 0 to 10: {{sample.output_text}}"}],
          "sampling_params": {"max_completions_tokens": 6, "temperature": 0}}


def endpoint(live_server, key):
    found = JudgeEndpoint(name="self", base_url=live_server.url + "/v1")
    found.key = key
    found.save()
    return found


def test_an_external_endpoint_judges_with_its_own_key(live_server, snapshots, admin_user):
    from api.models import ApiKey

    endpoint(live_server, ApiKey.issue(admin_user, "judge")[1])
    assert judge_exists("self/tiny") and not judge_exists("other/tiny")
    grader = validate_grader(GRADER, model_exists=judge_exists)
    result = run_grader(grader, "your parcel is on its way", {}, judge=StudioJudge(timeout=60))
    errors = result.metadata["errors"]
    assert errors["model_grader_server_error"] is False, result.messages
    usage = result.token_usage_per_model["self/tiny"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0  # the endpoint answered
    # The untrained tiny model writes no number: a parse error, reward 0, never a crash.
    assert errors["model_grader_parse_error"] or 0 <= result.reward <= 10


def test_a_refused_key_is_a_server_error_of_that_item(live_server, snapshots):
    endpoint(live_server, "sk-wrong")
    result = run_grader(validate_grader(GRADER, model_exists=judge_exists), "hello", {},
                        judge=StudioJudge(timeout=60))
    errors = result.metadata["errors"]
    assert errors["model_grader_server_error"] is True and result.reward == 0
    assert "401" in " ".join(result.messages)
