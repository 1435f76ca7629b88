"""API keys: the settings page, the command, and what a key may reach."""

import io

import pytest
from django.core.management import call_command

from api.models import ApiKey, digest
from tests.api_client import ApiClient, assert_error


def test_a_key_is_stored_only_as_a_hash(admin_user):
    key, raw = ApiKey.issue(admin_user, "laptop")
    assert raw.startswith("sk-attune-") and len(raw) > 40
    key.refresh_from_db()
    assert key.hashed_key == digest(raw) and raw not in key.hashed_key
    assert raw.startswith(key.prefix) and len(key.prefix) < len(raw) - 20


def test_the_settings_page_shows_a_new_key_once(admin_client, admin_user):
    resp = admin_client.post("/settings/api-keys/", {"name": "CI"})
    assert resp.status_code == 200
    raw = resp.context["created"]["key"]
    assert raw in resp.content.decode()
    key = ApiKey.objects.get(owner=admin_user)
    assert key.name == "CI" and key.hashed_key == digest(raw)
    again = admin_client.get("/settings/api-keys/").content.decode()
    assert raw not in again and key.prefix in again


def test_evaluators_manage_their_own_keys(evaluator_client, evaluator_user, admin_user):
    ApiKey.issue(admin_user, "admin's")
    resp = evaluator_client.post("/settings/api-keys/", {"name": "mine"})
    assert resp.status_code == 200
    page = evaluator_client.get("/settings/api-keys/").content.decode()
    assert "mine" in page and "admin&#x27;s" not in page and "admin's" not in page


def test_a_key_without_a_name_is_refused_on_the_page(admin_client):
    resp = admin_client.post("/settings/api-keys/", {"name": ""})
    assert resp.status_code == 200 and resp.context["form"].errors["name"]
    assert not ApiKey.objects.exists()


def test_revoking_a_key_stops_it_working(admin_client, admin_user, client):
    key, raw = ApiKey.issue(admin_user, "old")
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    resp = admin_client.post(f"/settings/api-keys/{key.pk}/revoke/")
    assert resp.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert_error(client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}"), 401, code="invalid_api_key")


def test_nobody_revokes_another_persons_key(evaluator_client, admin_user):
    key, _ = ApiKey.issue(admin_user, "admin's")
    assert evaluator_client.post(f"/settings/api-keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_settings_page_needs_a_login(client):
    resp = client.get("/settings/api-keys/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")


def test_create_api_key_prints_only_the_key(admin_user):
    out = io.StringIO()
    call_command("create_api_key", admin_user.username, stdout=out)
    raw = out.getvalue().strip()
    assert "\n" not in raw and raw.startswith("sk-attune-")
    assert ApiKey.objects.get(owner=admin_user).hashed_key == digest(raw)


def test_create_api_key_names_an_unknown_user(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="nobody"):
        call_command("create_api_key", "nobody")


def test_a_missing_key_is_401_in_the_envelope(anonymous_api):
    error = assert_error(anonymous_api.get("/v1/fine_tuning/jobs"), 401, code="invalid_api_key")
    assert "Authorization" in error["message"]


def test_a_wrong_key_is_401(client, db):
    assert_error(ApiClient(client, "sk-attune-nope").get("/v1/files"), 401, code="invalid_api_key")


def test_a_session_login_is_no_api_credential(admin_client):
    assert_error(admin_client.get("/v1/files"), 401)


def test_a_key_records_when_it_was_last_used(api, admin_user):
    assert ApiKey.objects.get(owner=admin_user).last_used_at is None
    api.get("/v1/models")
    assert ApiKey.objects.get(owner=admin_user).last_used_at is not None


def test_a_key_of_a_deactivated_user_is_refused(api, admin_user):
    admin_user.is_active = False
    admin_user.save()
    assert_error(api.get("/v1/models"), 401)


@pytest.mark.parametrize("method, path", [
    ("get", "/v1/files"), ("post", "/v1/files"), ("get", "/v1/files/file-x"), ("delete", "/v1/files/file-x"),
    ("get", "/v1/files/file-x/content"), ("get", "/v1/fine_tuning/jobs"), ("post", "/v1/fine_tuning/jobs"),
    ("get", "/v1/fine_tuning/jobs/ftjob-x"), ("post", "/v1/fine_tuning/jobs/ftjob-x/cancel"),
    ("post", "/v1/fine_tuning/jobs/ftjob-x/pause"), ("post", "/v1/fine_tuning/jobs/ftjob-x/resume"),
    ("get", "/v1/fine_tuning/jobs/ftjob-x/events"), ("get", "/v1/fine_tuning/jobs/ftjob-x/checkpoints"),
])
def test_an_evaluators_key_is_refused_outside_the_model_list(evaluator_api, method, path):
    resp = getattr(evaluator_api, method)(path)
    assert_error(resp, 403, code="permission_denied")


def test_an_evaluators_key_cannot_run_a_snapshot(evaluator_api, base_model):
    resp = evaluator_api.post("/v1/chat/completions", {"model": "attune-tiny",
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert_error(resp, 403, code="permission_denied")


TASK_SNAPSHOTS = ["attune-tiny", "ft:attune-tiny:intents:abc123", "ft:attune-tiny:intents:abc123:ckpt-step-40"]


def _assigned_task(admin_user, evaluator_user, names=TASK_SNAPSHOTS):
    from playground.models import RatingTask, TaskItem

    task = RatingTask.objects.create(name="blind", created_by=admin_user, snapshot_names=names,
                                     status=RatingTask.READY, n_items=1)
    task.evaluators.add(evaluator_user)
    item = TaskItem.objects.create(task=task, index=0, messages=[{"role": "user", "content": "hi"}])
    return task, item


def test_an_evaluators_key_lists_only_the_snapshots_they_rate_under_opaque_aliases(
        evaluator_api, evaluator_user, admin_user, base_model):
    from playground.models import RatingTask

    task, _ = _assigned_task(admin_user, evaluator_user)
    RatingTask.objects.create(name="not theirs", created_by=admin_user, snapshot_names=["ft:x:y:zzz"])
    resp = evaluator_api.get("/v1/models")
    assert resp.status_code == 200
    listed = resp.json()["data"]
    assert len(listed) == 3 and all(m["id"].startswith("blind-") for m in listed)
    assert {m["owned_by"] for m in listed} == {"org-attune"}
    body = resp.content.decode()
    assert not any(name in body for name in TASK_SNAPSHOTS + ["ft:x:y:zzz", admin_user.username, "ftjob-"])
    assert evaluator_api.get("/v1/models").json()["data"] == listed  # the same aliases every time
    alias = listed[0]["id"]
    assert evaluator_api.get(f"/v1/models/{alias}").json()["id"] == alias
    assert_error(evaluator_api.get("/v1/models/attune-tiny"), 404, param="model")


def test_an_evaluators_key_lists_the_names_once_their_queue_is_done(evaluator_api, evaluator_user, admin_user):
    from playground.models import Rating

    _, item = _assigned_task(admin_user, evaluator_user)
    Rating.objects.create(rater=evaluator_user, item=item, verdict="tie")
    listed = evaluator_api.get("/v1/models").json()["data"]
    assert sorted(m["id"] for m in listed) == sorted(TASK_SNAPSHOTS)
    assert {m["owned_by"] for m in listed} == {"org-attune"}


def test_an_evaluator_cannot_delete_a_model(evaluator_api, base_model):
    assert_error(evaluator_api.delete("/v1/models/attune-tiny"), 403, code="permission_denied")
