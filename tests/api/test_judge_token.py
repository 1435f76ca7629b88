"""A reinforcement job's judge token: what its engine gets (never in spec.json), and what /v1 lets it do (ask
its grader's judges at POST /v1/chat/completions while that attempt runs, as the job's creator; nothing else)."""

import json
import sys

import pytest
from django.core import signing

from tests.api_client import ApiClient, assert_error
from tests.factories import chat_lines, make_claimed_job, make_user, reinforcement_lines, upload
from training.launch import (
    JUDGE_TOKEN_PREFIX,
    engine_env,
    engine_spec,
    judge_token,
    read_judge_token,
    start_engine,
    write_spec,
)
from training.models import FineTuningJob

pytestmark = pytest.mark.django_db

LABEL = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
         "reference": "{{item.intent}}", "operation": "eq"}
JUDGE = {"type": "score_model", "name": "judge", "model": "attune-tiny",
         "input": [{"role": "user", "content": "Score {{sample.output_text}} against {{item.intent}}."}]}
MULTI = {"type": "multi", "name": "both", "calculate_output": "label * judge",
         "graders": {"label": LABEL, "judge": JUDGE}}
PROMPT = [{"role": "user", "content": "Score 'greeting' against greeting."}]


def rft_job(user, grader=MULTI):
    return make_claimed_job(user, training_file=upload(reinforcement_lines(12)), method="reinforcement",
                            grader=grader)


@pytest.fixture
def job(admin_user, base_model):
    return rft_job(admin_user)


class JudgeBackend:
    """An inference backend that answers every prompt with a score and remembers what it was asked."""

    def __init__(self):
        self.asked = []

    async def generate(self, snapshots, messages, params):
        from playground.inference.base import StreamEvent

        self.asked.append((snapshots[0].name, messages))
        yield StreamEvent(index=0, type="done", text="0.75", finish_reason="stop", n_tokens=2, n_prompt_tokens=9)


@pytest.fixture
def judge_backend():
    from playground import inference

    kept, inference._backend = inference._backend, JudgeBackend()
    yield inference._backend
    inference._backend = kept


def bearer(client, token):
    return ApiClient(client, token)


def ask(client, token, model="attune-tiny", **body):
    return bearer(client, token).post("/v1/chat/completions", {"model": model, "messages": PROMPT,
                                                               "temperature": 0, **body})


# --- what the engine gets ------------------------------------------------------------------------------

def test_a_reinforcement_job_with_a_judge_gets_the_studio_url_and_the_sandbox_limits(job, settings):
    settings.ATTUNE_STUDIO_URL = "http://studio.internal:9000/"
    settings.PYTHON_GRADER_CPU_SECONDS, settings.PYTHON_GRADER_MEMORY_MB = 4.0, 512
    spec = engine_spec(job)
    assert spec["judge_url"] == "http://studio.internal:9000/v1"
    assert spec["python_grader_limits"] == {"cpu_seconds": 4.0, "memory_mb": 512,
                                            "wall_seconds": settings.PYTHON_GRADER_WALL_SECONDS}
    settings.ATTUNE_STUDIO_URL = ""
    assert engine_spec(job)["judge_url"] == "http://127.0.0.1:8000/v1"


def test_a_reinforcement_job_without_a_model_grader_asks_no_judge(admin_user, base_model):
    job = rft_job(admin_user, grader=LABEL)
    spec = engine_spec(job)
    assert spec["judge_url"] is None and spec["python_grader_limits"]["cpu_seconds"] > 0
    assert "ATTUNE_JUDGE_TOKEN" not in engine_env(spec, {}, attempt=job.attempts)


def test_a_supervised_job_gets_neither(admin_user, base_model):
    job = make_claimed_job(admin_user, training_file=upload(chat_lines(12)))
    spec = engine_spec(job)
    assert spec.get("judge_url") is None and spec.get("python_grader_limits") is None
    assert "ATTUNE_JUDGE_TOKEN" not in engine_env(spec, {})


def test_the_token_reaches_the_engines_environment_and_never_its_spec_file(job):
    spec = engine_spec(job)
    job.job_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", "import os; print(os.environ['ATTUNE_JUDGE_TOKEN'])"]
    write_spec(job, spec)
    process = start_engine(job, spec, command, "test-worker")
    out, _ = process.communicate(timeout=60)
    token = out.decode().strip()
    assert token.startswith(JUDGE_TOKEN_PREFIX)
    assert read_judge_token(token) == (job.public_id, job.attempts)
    written = (job.job_dir / "spec.json").read_text()
    assert token not in written and token[len(JUDGE_TOKEN_PREFIX):] not in written
    assert json.loads(written)["judge_url"].endswith("/v1")


def test_a_job_that_asks_judges_cannot_start_without_its_attempt(job):
    with pytest.raises(ValueError):
        engine_env(engine_spec(job), {})


# --- what /v1 lets the token do ------------------------------------------------------------------------

def test_the_token_asks_the_jobs_judge_as_its_creator_while_the_job_runs(client, job, judge_backend):
    token = judge_token(job.public_id, job.attempts)
    resp = ask(client, token, max_completion_tokens=4)
    assert resp.status_code == 200, resp.content
    answer = resp.json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"] == "0.75"
    assert answer["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert judge_backend.asked == [("attune-tiny", PROMPT)]


def test_the_token_is_refused_once_the_job_has_ended(client, job, judge_backend):
    token = judge_token(job.public_id, job.attempts)
    job.cancel(by=job.created_by)
    job.refresh_from_db()
    assert job.status != FineTuningJob.RUNNING
    assert_error(ask(client, token), 401, code="invalid_api_key")
    assert judge_backend.asked == []


def test_a_token_of_an_earlier_attempt_is_refused(client, job, judge_backend):
    old = judge_token(job.public_id, job.attempts)
    FineTuningJob.objects.filter(pk=job.pk).update(attempts=job.attempts + 1)  # re-queued and claimed again
    assert_error(ask(client, old), 401, code="invalid_api_key")
    assert ask(client, judge_token(job.public_id, job.attempts + 1)).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("get", "/v1/models"), ("get", "/v1/fine_tuning/jobs"), ("post", "/v1/fine_tuning/jobs"),
    ("get", "/v1/files"), ("post", "/v1/fine_tuning/alpha/graders/run"), ("get", "/v1/evals"),
])
def test_the_token_opens_no_other_route(client, job, method, path):
    api = bearer(client, judge_token(job.public_id, job.attempts))
    resp = api.get(path) if method == "get" else api.post(path, {})
    error = assert_error(resp, 401, code="invalid_api_key")
    assert "only for POST /v1/chat/completions" in error["message"]


def test_a_tampered_or_foreign_token_is_refused(client, job, judge_backend):
    token = judge_token(job.public_id, job.attempts)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_salt = JUDGE_TOKEN_PREFIX + signing.dumps({"job": job.public_id, "attempt": job.attempts})
    forged = JUDGE_TOKEN_PREFIX + signing.dumps({"job": job.public_id, "attempt": job.attempts},
                                                key="not-the-studio-key", salt="attune.training.launch.judge-token")
    payload = token[len(JUDGE_TOKEN_PREFIX):].rpartition(":")[0]
    for bad in (flipped, other_salt, forged, JUDGE_TOKEN_PREFIX, token + "x", payload):
        assert_error(ask(client, bad), 401, code="invalid_api_key")
    assert judge_backend.asked == []


def test_a_token_never_passes_for_another_signed_value(job):
    assert read_judge_token(signing.dumps({"job": job.public_id, "attempt": job.attempts})) is None
    assert read_judge_token(JUDGE_TOKEN_PREFIX + signing.dumps(["x", 1],
                                                               salt="attune.training.launch.judge-token")) is None


def test_the_token_asks_only_the_models_its_grader_names(client, job, judge_backend):
    from tests.factories import make_base_model

    make_base_model("other-model")
    error = assert_error(ask(client, judge_token(job.public_id, job.attempts), model="other-model"), 403,
                         param="model", code="permission_denied")
    assert "attune-tiny" in error["message"]
    assert judge_backend.asked == []


def test_the_token_acts_as_the_creator_and_so_keeps_their_role(client, base_model, judge_backend):
    creator = make_user("admin", username="carol")
    job = rft_job(creator)
    creator.is_staff = creator.is_superuser = False
    creator.save()
    assert_error(ask(client, judge_token(job.public_id, job.attempts)), 403, code="permission_denied")


def test_an_external_judge_is_asked_by_the_studio_with_the_key_it_keeps(client, admin_user, base_model,
                                                                       monkeypatch):
    from evals.judges import StudioJudge
    from evals.models import JudgeEndpoint
    from graders import JudgeAnswer

    endpoint = JudgeEndpoint(name="lab", base_url="http://127.0.0.1:9/v1")
    endpoint.key = "sk-lab-secret"
    endpoint.save()
    asked = []

    def external(self, endpoint, model, messages, params, choices):
        asked.append((endpoint.name, endpoint.key, model, messages, params))
        return JudgeAnswer(text="1", prompt_tokens=5, completion_tokens=1)

    monkeypatch.setattr(StudioJudge, "_external", external)
    job = rft_job(admin_user, grader={**JUDGE, "model": "lab/big-judge"})
    token = judge_token(job.public_id, job.attempts)
    resp = ask(client, token, model="lab/big-judge", max_completion_tokens=3, seed=4)
    assert resp.status_code == 200, resp.content
    assert resp.json()["choices"][0]["message"]["content"] == "1"
    assert asked == [("lab", "sk-lab-secret", "big-judge", PROMPT,
                      {"temperature": 0, "top_p": None, "seed": 4, "max_completions_tokens": 3})]
    assert_error(ask(client, token, model="lab/big-judge", stream=True), 400, param="stream")
