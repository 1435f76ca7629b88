import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from training.models import BaseModel, DataFile


def chat_lines(n, bad_line=None):
    lines = []
    for i in range(n):
        row = {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        lines.append(json.dumps(row))
    if bad_line:
        lines[bad_line - 1] = "{broken"
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def client_factory():
    return Client


@pytest.mark.django_db
def test_an_upload_through_the_page_is_validated_and_listed(admin_client):
    resp = admin_client.post("/datasets/", {"file": SimpleUploadedFile("good.jsonl", chat_lines(12))})
    data_file = DataFile.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/datasets/{data_file.public_id}/"
    assert data_file.status == "processed" and data_file.n_examples == 12 and data_file.owner.username == "alice"
    listing = admin_client.get("/datasets/").content.decode()
    assert "good.jsonl" in listing and data_file.public_id in listing
    detail = admin_client.get(resp["Location"]).content.decode()
    assert "q0" in detail and "a0" in detail  # the first examples, rendered as turns


@pytest.mark.django_db
def test_a_malformed_upload_shows_its_line_numbered_errors_and_keeps_other_files(admin_client):
    admin_client.post("/datasets/", {"file": SimpleUploadedFile("good.jsonl", chat_lines(12))})
    resp = admin_client.post("/datasets/", {"file": SimpleUploadedFile("bad.jsonl", chat_lines(12, bad_line=7))},
                             follow=True)
    bad = DataFile.objects.get(filename="bad.jsonl")
    assert bad.status == "error" and not bad.usable
    html = resp.content.decode()
    assert 'id="errors"' in html and ">7<" in html and "invalid_json" in html
    good = DataFile.objects.get(filename="good.jsonl")
    assert good.status == "processed" and good.full_path.exists()


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_refused_with_a_clear_error(admin_client, settings):
    settings.ATTUNE_MAX_UPLOAD_MB = 0
    admin_client.post("/datasets/", {"file": SimpleUploadedFile("big.jsonl", chat_lines(12))})
    data_file = DataFile.objects.get()
    assert data_file.status == "error" and data_file.errors[0]["code"] == "file_too_large"
    assert not data_file.full_path.exists()


@pytest.mark.django_db
def test_an_upload_without_a_file_is_answered_inline(admin_client):
    resp = admin_client.post("/datasets/", {})
    assert resp.status_code == 200 and "This field is required" in resp.content.decode()
    assert not DataFile.objects.exists()


@pytest.mark.django_db
def test_an_admin_adds_an_evaluator_whose_password_is_shown_once(admin_client, admin_user, client_factory):
    resp = admin_client.post("/users/", {"username": "rater1", "role": "evaluator"})
    html = resp.content.decode()
    assert resp.status_code == 200 and 'id="new-password"' in html
    password = html.split('id="new-password">')[1].split("<")[0]
    other = client_factory()
    assert other.post("/login/", {"username": "rater1", "password": password}).status_code == 302
    assert other.get("/datasets/").status_code == 403
    again = admin_client.post("/users/", {"username": "rater1", "role": "evaluator"})
    assert "already exists" in again.content.decode()


@pytest.mark.django_db
def test_the_detail_page_counts_tokens_with_a_base_model_it_cannot_load_without_failing(admin_client):
    BaseModel.objects.create(name="ghost", source="/nowhere/ghost")
    admin_client.post("/datasets/", {"file": SimpleUploadedFile("good.jsonl", chat_lines(12))})
    data_file = DataFile.objects.get()
    resp = admin_client.get(f"/datasets/{data_file.public_id}/")
    assert resp.status_code == 200 and "Could not load the tokenizer of ghost" in resp.content.decode()
