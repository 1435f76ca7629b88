"""Fixtures for the /v1 tests: keys, bearer-authenticated test clients and the demo files uploaded through
/v1/files (`train_file` and `valid_file` here are file ids, not the DataFiles of tests/conftest.py)."""

import pytest

from tests.api_client import ApiClient
from training.demo_data import make_demo_data, to_jsonl


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
def train_file(api, demo_jsonl):
    resp = api.upload("train.jsonl", demo_jsonl["train"])
    assert resp.status_code == 200, resp.content
    return resp.json()["id"]


@pytest.fixture
def valid_file(api, demo_jsonl):
    resp = api.upload("valid.jsonl", demo_jsonl["valid"])
    assert resp.status_code == 200, resp.content
    return resp.json()["id"]
