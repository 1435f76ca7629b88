"""/v1/files: upload with the JSONL check, list with exact cursors, retrieve, content, delete."""

import base64

from tests.api_client import assert_error
from training.models import DataFile


def test_an_upload_is_processed_at_once(api, demo_jsonl):
    resp = api.upload("train.jsonl", demo_jsonl["train"])
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert body["status"] == "processed" and body["purpose"] == "fine-tune"
    assert body["filename"] == "train.jsonl" and body["bytes"] == len(demo_jsonl["train"].encode())
    assert isinstance(body["created_at"], int) and body["expires_at"] is None and body["status_details"] is None
    assert DataFile.objects.get(public_id=body["id"]).n_examples == 400


def test_a_line_that_is_not_json_is_refused_at_once(api, demo_jsonl):
    content = demo_jsonl["train"].splitlines()[0] + "\n[1, 2, 3]\n"
    error = assert_error(api.upload("bad.jsonl", content), 400, param=None)
    assert error["type"] == "invalid_request_error" and error["code"] is None
    assert "every line is a valid JSON dictionary" in error["message"]
    assert "Line 2 is not a dictionary" in error["message"] and "[1, 2, 3]" in error["message"]
    assert not DataFile.objects.exists()


def test_broken_json_names_its_line(api):
    error = assert_error(api.upload("bad.jsonl", '{"messages": [\n'), 400, param=None)
    assert "Line 1 is not a dictionary" in error["message"]


def test_a_file_with_schema_errors_is_kept_with_status_error(api, demo_jsonl):
    content = demo_jsonl["train"] + '{"messages": [{"role": "user", "content": "hi"}]}\n'
    body = api.upload("partial.jsonl", content).json()
    assert body["status"] == "error"
    assert "Line 401" in body["status_details"] and "assistant" in body["status_details"]


def test_a_line_over_the_line_limit_is_kept_as_an_error_naming_its_line(api, demo_jsonl, settings):
    settings.ATTUNE_MAX_LINE_MB = 1
    long_line = '{"messages": [{"role": "user", "content": "%s"}]}' % ("a" * 1024 * 1024)
    lines = demo_jsonl["train"].splitlines()
    body = api.upload("long.jsonl", "\n".join(lines[:2] + [long_line] + lines[2:]) + "\n").json()
    assert body["status"] == "error"
    assert body["status_details"].startswith("Line 3 is ") and "ATTUNE_MAX_LINE_MB" in body["status_details"]
    data_file = DataFile.objects.get(public_id=body["id"])
    assert data_file.n_examples == 400 and [e["code"] for e in data_file.errors] == ["line_too_long"]


def test_only_the_fine_tune_purpose_is_accepted(api, demo_jsonl):
    assert_error(api.upload("a.jsonl", demo_jsonl["valid"], purpose="batch"), 400, param="purpose",
                 code="invalid_purpose")
    assert_error(api.upload("a.jsonl", demo_jsonl["valid"], purpose=None), 400, param="purpose")


def test_an_upload_without_a_file_names_the_file_param(api):
    resp = api.client.post("/v1/files", {"purpose": "fine-tune"}, HTTP_AUTHORIZATION=f"Bearer {api.key}")
    assert_error(resp, 400, param="file")


def test_listing_pages_with_exact_cursors_until_an_empty_page(api, demo_jsonl):
    ids = [api.upload(f"f{i}.jsonl", demo_jsonl["valid"]).json()["id"] for i in range(5)]
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = api.get("/v1/files", params).json()
        pages += 1
        if not page["data"]:
            assert page["has_more"] is False and page["first_id"] is None
            break
        assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
        seen += [f["id"] for f in page["data"]]
        assert page["has_more"] == (len(seen) < 5)
        after = page["last_id"]
    assert seen == list(reversed(ids)) and pages == 4


def test_listing_in_ascending_order_and_by_purpose(api, demo_jsonl):
    ids = [api.upload(f"f{i}.jsonl", demo_jsonl["valid"]).json()["id"] for i in range(3)]
    page = api.get("/v1/files", {"order": "asc"}).json()
    assert [f["id"] for f in page["data"]] == ids and page["has_more"] is False
    assert api.get("/v1/files", {"purpose": "fine-tune-results"}).json()["data"] == []
    assert api.get("/v1/files", {"after": ids[1], "order": "asc"}).json()["data"][0]["id"] == ids[2]


def test_bad_list_parameters_are_named(api):
    assert_error(api.get("/v1/files", {"limit": 0}), 400, param="limit")
    assert_error(api.get("/v1/files", {"limit": "ten"}), 400, param="limit")
    assert_error(api.get("/v1/files", {"order": "sideways"}), 400, param="order")
    assert_error(api.get("/v1/files", {"after": "file-nope"}), 400, param="after")


def test_retrieve_and_content(api, demo_jsonl, train_file):
    assert api.get(f"/v1/files/{train_file}").json()["id"] == train_file
    resp = api.get(f"/v1/files/{train_file}/content")
    assert resp.status_code == 200 and resp.is_async  # read block by block under the ASGI server
    assert b"".join(resp) == demo_jsonl["train"].encode()
    assert int(resp["Content-Length"]) == len(demo_jsonl["train"].encode())


def test_result_files_come_back_base64_encoded(api, settings):
    csv = b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,1.52347,0.0,,\n"
    folder = settings.FILES_DIR / "results"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "step_metrics.csv").write_bytes(csv)
    result = DataFile.objects.create(filename="step_metrics.csv", purpose="fine-tune-results",
                                     path="results/step_metrics.csv", bytes=len(csv), status="processed")
    resp = api.get(f"/v1/files/{result.public_id}/content")
    assert base64.b64decode(resp.content) == csv
    assert api.get("/v1/files", {"purpose": "fine-tune-results"}).json()["data"][0]["purpose"] == \
        "fine-tune-results"


def test_an_unknown_file_is_404_naming_the_id(api, db):
    error = assert_error(api.get("/v1/files/file-nope"), 404, param="id")
    assert "file-nope" in error["message"]
    assert_error(api.get("/v1/files/file-nope/content"), 404, param="id")
    assert_error(api.delete("/v1/files/file-nope"), 404, param="id")


def test_deleting_a_file_removes_it_and_its_content(api, train_file):
    path = DataFile.objects.get(public_id=train_file).full_path
    assert path.exists()
    resp = api.delete(f"/v1/files/{train_file}")
    assert resp.json() == {"id": train_file, "object": "file", "deleted": True}
    assert not path.exists() and not DataFile.objects.filter(public_id=train_file).exists()
    assert_error(api.get(f"/v1/files/{train_file}"), 404, param="id")


def test_a_file_a_job_uses_cannot_be_deleted(api, train_file, base_model):
    from training.models import FineTuningJob

    FineTuningJob.objects.create(base_model=base_model, training_file=DataFile.objects.get(public_id=train_file),
                                 spec={"model": "attune-tiny", "training_file": train_file})
    error = assert_error(api.delete(f"/v1/files/{train_file}"), 400, param="file_id", code="file_in_use")
    assert "ftjob-" in error["message"]
    assert DataFile.objects.filter(public_id=train_file).exists()
