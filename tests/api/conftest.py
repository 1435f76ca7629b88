"""Fixtures for the /v1 tests: keys, a bearer-authenticated test client, a base model and uploaded demo files."""

import io
import json

import pytest

from training.demo_data import make_demo_data, to_jsonl


class ApiClient:
    """Django's test client with a bearer key on every request, answering parsed JSON."""

    def __init__(self, client, key):
        self.client = client
        self.key = key

    def _headers(self):
        return {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}

    def get(self, path, params=None):
        return self.client.get(path, params or {}, **self._headers())

    def post(self, path, body=None, raw=None, content_type="application/json"):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(path, data, content_type=content_type, **self._headers())

    def delete(self, path):
        return self.client.delete(path, **self._headers())

    def upload(self, name, content, purpose="fine-tune"):
        upload = io.BytesIO(content.encode() if isinstance(content, str) else content)
        upload.name = name
        data = {"file": upload}
        if purpose is not None:
            data["purpose"] = purpose
        return self.client.post("/v1/files", data, **self._headers())


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Every test here makes accounts; the API never checks their passwords.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_key(admin_user):
    from api.models import ApiKey

    return ApiKey.issue(admin_user, "tests")[1]


@pytest.fixture
def evaluator_key(evaluator_user):
    from api.models import ApiKey

    return ApiKey.issue(evaluator_user, "tests")[1]


@pytest.fixture
def api(client, admin_key):
    return ApiClient(client, admin_key)


@pytest.fixture
def evaluator_api(client, evaluator_key):
    return ApiClient(client, evaluator_key)


@pytest.fixture
def anonymous_api(client):
    return ApiClient(client, None)


@pytest.fixture(scope="session")
def demo_jsonl():
    train, valid, _ = make_demo_data()
    return {"train": to_jsonl(train), "valid": to_jsonl(valid)}


@pytest.fixture
def base_model(db):
    from training.models import BaseModel

    return BaseModel.objects.create(name="attune-tiny", source="attune-tiny")


@pytest.fixture
def train_file(api, demo_jsonl):
    resp = api.upload("train.jsonl", demo_jsonl["train"])
    assert resp.status_code == 200, resp.content
    return resp.json()["id"]


@pytest.fixture
def valid_file(api, demo_jsonl):
    resp = api.upload("valid.jsonl", demo_jsonl["valid"])
    assert resp.status_code == 200, resp.content
    return resp.json()["id"]


def assert_error(resp, status, param=None, code=None):
    """The contract's envelope, with the expected status and param."""
    assert resp.status_code == status, (resp.status_code, resp.content[:500])
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error

