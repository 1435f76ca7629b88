"""The role matrix over every URL in the project's URLconf.

Each route is listed below exactly once: public, for evaluators, or for admins (the API per method). Each is
asked for with made-up ids (objects that do not exist) and with the ids of real objects:

- an anonymous user goes to the login page (the API answers 401), on every method the route serves;
- an evaluator gets exactly 403 on every method an admin route serves, whether its object exists or not, and
  is never refused on the routes listed for them;
- an admin is never refused and never meets a 500, and reaches every real object of an admin route.

A route added to the URLconf and not listed here fails `test_every_route_is_listed_once`.
"""

import re
import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

# Pages ------------------------------------------------------------------------------------------------------

PUBLIC = {"login", "logout"}
# What evaluators use: their home, their rating tasks, the pages of a comparison of their own (streamed,
# rated, read again), the leaderboard and its export, their own API keys.
FOR_EVALUATORS = {
    "home", "rating_tasks", "rating_task_detail", "rating_task_rate", "comparison_detail", "compare_stream",
    "compare_rate", "leaderboard", "leaderboard_export", "api_keys", "api_key_revoke",
}
# Everything else, the playground's compare page, its snapshot search and the management of rating tasks
# included: evaluators rate the outputs their tasks stored, and picking snapshots of their own to prompt
# would let them match a blind task's columns to names.
FOR_ADMINS = {
    "datasets", "dataset_detail", "dataset_download", "users", "base_models", "jobs", "job_new", "compare_jobs",
    "job_detail", "job_rerun", "job_cancel", "job_pause", "job_resume", "checkpoint_download",
    "sweeps", "sweep_detail", "sweep_cancel",
    "playground", "playground_snapshots", "compare_start", "rating_task_new", "rating_task_close",
    "rating_task_preferences", "comparison_preferences",
    "rating_task_restart", "webhooks", "webhook_detail", "webhook_toggle", "webhook_delete",
    "evals", "eval_new", "eval_try", "eval_detail", "eval_run_new", "eval_run_cancel", "eval_items", "eval_agreement",
    "judge_endpoints", "judge_endpoint_delete",
}
PAGE_METHODS = ("get", "post")

# The /v1 API ------------------------------------------------------------------------------------------------

API_PUBLIC = {"api_openapi", "api_unknown"}  # the schema holds no data; an unknown route is a 404 envelope
# The methods evaluators' keys may use; the route's other methods are for admins (an evaluator lists and reads
# the snapshots of their tasks, and deletes nothing).
API_FOR_EVALUATORS = {"api_models": {"get"}, "api_model": {"get"}}
API_FOR_ADMINS = {
    "api_files", "api_file", "api_file_content", "api_jobs", "api_job", "api_job_cancel", "api_job_pause",
    "api_job_resume", "api_job_events", "api_job_checkpoints", "api_chat_completions",
    "api_graders_validate", "api_graders_run", "api_evals", "api_eval", "api_eval_runs", "api_eval_run",
    "api_eval_run_cancel", "api_eval_output_items", "api_eval_output_item", "api_sweeps", "api_sweep",
    "api_sweep_cancel",
}
API_METHODS = ("get", "post", "delete")

MADE_UP = {"int": "999999", "str": "nope-0", "slug": "nope-0", "path": "nope/0", "uuid": str(uuid.UUID(int=7))}
UNKNOWN_API_ROUTE = "no-such-route"


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


ROUTES = list(_walk(get_resolver().url_patterns))
PAGES = [(route, name) for route, name in ROUTES if not route.startswith("v1/") and name not in PUBLIC]
API = [(route, name) for route, name in ROUTES if route.startswith("v1/")]
ADMIN_PAGES = [(route, name) for route, name in PAGES if name in FOR_ADMINS]
EVALUATOR_PAGES = [(route, name) for route, name in PAGES if name in FOR_EVALUATORS]


def _fill(route, real=None):
    """The route's path with made-up ids, or with those of `real` (kwarg name → value)."""
    if route.startswith("v1/^"):  # the catch-all of unknown API routes
        return "/v1/" + UNKNOWN_API_ROUTE

    def value(match):
        converter, kwarg = match.group(1) or "str", match.group(2)
        if real is None:
            return MADE_UP[converter]
        assert kwarg in real, f"No real object for <{kwarg}> in {route}: add one to the real_ids fixture."
        return str(real[kwarg])

    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", value, route)


def _params(routes):
    return [pytest.param(route, name, kind, id=f"{name}-{kind}") for route, name in routes
            for kind in ("made-up", "real")]


@pytest.fixture
def real_ids(admin_user, evaluator_user, settings):
    """One real object per URL kwarg: those an evaluator may use are theirs (the comparison they started, the
    task assigned to them, their API key), so that a refusal can only come from the role."""
    from api.models import ApiKey
    from playground.models import Comparison, Output, RatingTask, TaskItem
    from training.models import BaseModel, Checkpoint, DataFile, FineTuningJob, Sweep, WebhookEndpoint

    base = BaseModel.objects.create(name="attune-tiny", source="attune-tiny")
    data_file = DataFile.objects.create(filename="train.jsonl", path="roles/train.jsonl", status="processed",
                                        n_examples=1, format="chat")
    data_file.full_path.parent.mkdir(parents=True, exist_ok=True)
    data_file.full_path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    spec = {"model": base.name, "training_file": data_file.public_id, "method": "supervised", "adapter": "lora",
            "n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": "auto", "beta": "auto", "seed": 7}
    job = FineTuningJob.objects.create(base_model=base, training_file=data_file, created_by=admin_user,
                                       status="succeeded", spec=spec, seed=7)
    checkpoint = Checkpoint.objects.create(job=job, epoch=1, step=10, path="roles/no-such-checkpoint",
                                           is_final=True)
    sweep = Sweep.objects.create(created_by=admin_user, spec=spec, metric="full_valid_loss",
                                 definition={"mode": "grid", "fields": {"lora_r": [16]}, "n": 1, "seed": None})
    FineTuningJob.objects.filter(pk=job.pk).update(sweep=sweep)
    comparison = Comparison.objects.create(created_by=evaluator_user, blind=True, status=Comparison.FINISHED,
                                           messages=[{"role": "user", "content": "hi"}])
    Output.objects.create(comparison=comparison, position=0, snapshot_name=base.name, status=Output.DONE,
                          text="hello")
    task = RatingTask.objects.create(name="t", created_by=admin_user, snapshot_names=[base.name, "other"],
                                     n_items=1, status=RatingTask.READY)
    task.evaluators.add(evaluator_user)
    TaskItem.objects.create(task=task, index=0, messages=[{"role": "user", "content": "hi"}])
    endpoint = WebhookEndpoint.objects.create(url="https://example.invalid/hook", secret="whsec_x",
                                              created_by=admin_user)
    key, _ = ApiKey.issue(evaluator_user, "roles")
    from evals.models import Eval, EvalRun, JudgeEndpoint, OutputItem

    eval_obj = Eval.objects.create(name="roles", data_source_config={"type": "custom", "item_schema": {}},
                                   testing_criteria=[{"type": "string_check", "name": "s", "input": "a",
                                                      "reference": "a", "operation": "eq"}])
    run = EvalRun.objects.create(eval=eval_obj, status=EvalRun.COMPLETED, data_source={"type": "jsonl"})
    item = OutputItem.objects.create(run=run, index=0)
    judge = JudgeEndpoint.objects.create(name="roles", base_url="https://example.invalid/v1")
    return {"judge_id": judge.pk, "eval_id": eval_obj.public_id, "run_id": run.public_id,
            "item_id": item.public_id, "file_id": data_file.public_id, "job_id": job.public_id,
            "checkpoint_id": checkpoint.public_id, "sweep_id": sweep.public_id,
            "comparison_id": comparison.public_id, "task_id": task.public_id, "endpoint_id": endpoint.pk,
            "key_id": key.pk, "model_id": base.name}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Every test here makes two accounts; none logs in with a password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _url(route, kind, real_ids):
    return _fill(route, real_ids if kind == "real" else None)


# The lists --------------------------------------------------------------------------------------------------


def test_every_route_is_listed_once():
    page_names = [name for route, name in ROUTES if not route.startswith("v1/")]
    api_names = [name for route, name in API]
    page_lists = [PUBLIC, FOR_EVALUATORS, FOR_ADMINS]
    api_lists = [API_PUBLIC, set(API_FOR_EVALUATORS), API_FOR_ADMINS]
    assert len(page_names) == len(set(page_names)) and len(api_names) == len(set(api_names))
    unlisted = [n for n in page_names if sum(n in s for s in page_lists) != 1]
    unlisted += [n for n in api_names if sum(n in s for s in api_lists) != 1]
    assert unlisted == [], "List each route once, as public, for evaluators or for admins."
    gone = (set().union(*page_lists) - set(page_names)) | (set().union(*api_lists) - set(api_names))
    assert gone == set(), "Listed routes that the URLconf no longer has."


def test_the_matrix_covers_every_kind_of_page():
    assert len(ADMIN_PAGES) == len(FOR_ADMINS) and len(EVALUATOR_PAGES) == len(FOR_EVALUATORS)
    kwargs = {kwarg for route, _ in ROUTES for kwarg in re.findall(r"<(?:\w+:)?(\w+)>", route)}
    assert {"file_id", "job_id", "checkpoint_id", "comparison_id", "task_id", "endpoint_id"} <= kwargs


def test_a_made_up_id_is_not_a_real_one():
    assert _fill("jobs/<str:job_id>/cancel/") == "/jobs/nope-0/cancel/"
    assert _fill("jobs/<str:job_id>/cancel/", {"job_id": "ftjob-abc"}) == "/jobs/ftjob-abc/cancel/"
    with pytest.raises(AssertionError, match="No real object for <thing_id>"):
        _fill("things/<int:thing_id>/", {})


# Pages ------------------------------------------------------------------------------------------------------


def _served(route, kind, real_ids):
    """The route's URL and the methods it serves: those an anonymous request is not refused with 405 for."""
    url = _url(route, kind, real_ids)
    anonymous = Client()
    served = [m for m in PAGE_METHODS if getattr(anonymous, m)(url).status_code != 405]
    assert served, (url, "serves neither GET nor POST")
    return url, served


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, kind", _params(PAGES))
def test_anonymous_users_are_sent_to_login(client, real_ids, route, name, kind):
    url, served = _served(route, kind, real_ids)
    for method in served:
        resp = getattr(client, method)(url)
        assert resp.status_code == 302 and resp["Location"].startswith("/login/"), (method, url, resp.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, kind", _params(ADMIN_PAGES))
def test_evaluators_get_403_on_every_admin_page(evaluator_client, real_ids, route, name, kind):
    url, served = _served(route, kind, real_ids)
    codes = {method: getattr(evaluator_client, method)(url).status_code for method in served}
    assert codes == {method: 403 for method in served}, (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, kind", _params(EVALUATOR_PAGES))
def test_evaluators_are_not_refused_on_their_pages(evaluator_client, real_ids, route, name, kind):
    url = _url(route, kind, real_ids)
    codes = {method: getattr(evaluator_client, method)(url).status_code for method in PAGE_METHODS}
    assert 403 not in codes.values() and 500 not in codes.values(), (url, codes)
    if kind == "real":
        assert 404 not in codes.values(), (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name", PAGES)
def test_admins_are_never_refused(admin_client, route, name):
    url = _fill(route)
    codes = [admin_client.get(url).status_code, admin_client.post(url).status_code]
    assert 403 not in codes and 500 not in codes, (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name", ADMIN_PAGES)
def test_admins_reach_the_real_objects_of_admin_pages(admin_client, real_ids, route, name):
    # GET only: a POST to a real object would cancel, close or delete it.
    url = _fill(route, real_ids)
    code = admin_client.get(url).status_code
    assert code not in (403, 404, 500), (url, code)


def test_a_login_is_public(client):
    assert client.get("/login/").status_code == 200


# The /v1 API ------------------------------------------------------------------------------------------------


def _api_call(client, method, url, key=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    if method == "get":
        return client.get(url, **headers)
    return getattr(client, method)(url, "{}", content_type="application/json", **headers)


def _api_served(url):
    anonymous = Client()
    return [m for m in API_METHODS if _api_call(anonymous, m, url).status_code != 405]


API_GUARDED = [(route, name) for route, name in API if name not in API_PUBLIC]


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, kind", _params(API_GUARDED))
def test_the_api_answers_401_without_a_key(client, real_ids, route, name, kind):
    url = _url(route, kind, real_ids)
    served = _api_served(url)
    assert served, (url, "serves no method")
    codes = {method: _api_call(client, method, url).status_code for method in served}
    assert codes == {method: 401 for method in served}, (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name, kind", _params(API_GUARDED))
def test_an_evaluators_key_gets_403_on_every_admin_method(client, evaluator_user, real_ids, route, name, kind):
    from api.models import ApiKey

    _, key = ApiKey.issue(evaluator_user, "matrix")
    url = _url(route, kind, real_ids)
    allowed = API_FOR_EVALUATORS.get(name, set())
    codes = {method: _api_call(client, method, url, key).status_code for method in _api_served(url)}
    refused = {method: code for method, code in codes.items() if method not in allowed}
    assert refused == {method: 403 for method in refused}, (url, codes)
    assert all(codes[method] not in (401, 403, 500) for method in allowed if method in codes), (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("route, name", [(route, name) for route, name in API if name in API_PUBLIC])
def test_the_public_api_routes_need_no_key(client, route, name):
    assert client.get(_fill(route)).status_code in (200, 404)
