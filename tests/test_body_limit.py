"""Request bodies over the limit are refused with 413 before they are read (config/body_limit.py)."""

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from config.asgi import application
from config.body_limit import upload_paths
from tests.servers import manage, post_oversized_body


def asgi_post(path, chunks, headers=()):
    """POST to the ASGI application in process; (status, body, number of body chunks it read)."""
    chunks, read, sent = list(chunks), [], []

    async def receive():
        if len(read) == len(chunks):
            await asyncio.sleep(3600)  # the client keeps the connection open
        read.append(chunks[len(read)])
        return {"type": "http.request", "body": read[-1], "more_body": len(read) < len(chunks)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
             "headers": [(b"host", b"127.0.0.1"), *((k.encode(), v.encode()) for k, v in headers)]}
    asyncio.run(asyncio.wait_for(application(scope, receive, send), 30))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), len(read)


def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_read():
    status, body, read = asgi_post("/login/", [b"x" * 1024] * 4, [("content-length", "4000000000")])
    assert status == 413 and read == 0 and b"larger than the limit of 11 MB" in body


def test_a_chunked_body_is_refused_once_it_passes_the_limit():
    status, body, read = asgi_post("/login/", [bytes(1024 * 1024)] * 100)
    assert status == 413 and read == 12  # 12 MB passes the 11 MB limit; the other 88 chunks are never read



def test_the_upload_routes_are_the_views_that_take_a_file():
    from django.urls import resolve

    import api.views
    import dashboard.views
    import playground.views

    assert {resolve(path).func for path in upload_paths()} == {
        api.views.files, dashboard.views.datasets, playground.views.rating_task_new}


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def temp_bytes(pid):
    """Bytes in the deleted or temporary files the server holds open (where a spooled body would go)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith("(deleted)") or "/tmp" in target:
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            pass
    return total


@pytest.mark.slow
def test_a_multi_gigabyte_body_is_refused_at_once_and_memory_stays_flat(studio):
    key = manage(studio.home, "create_api_key", "admin", env=studio.env).stdout.strip()
    before = rss_mb(studio.process.pid)
    for path, headers in (("/login/", {}), ("/v1/files", {}), ("/v1/files", {"Authorization": f"Bearer {key}"})):
        status, sent = post_oversized_body(studio.url, path, headers=headers)
        assert status == 413, (path, headers)
        assert sent < 64 * 1024 * 1024  # answered long before the 4 GB it declared
        assert rss_mb(studio.process.pid) - before < 50
        assert temp_bytes(studio.process.pid) < 16 * 1024 * 1024
    # An upload above the anonymous limit, from a caller with a key, reaches the view.
    big = b'{"messages": []}\n' * (1024 * 1024)  # 17 MB
    resp = httpx.post(studio.url + "/v1/files", files={"file": ("big.jsonl", big)}, data={"purpose": "fine-tune"},
                      headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert resp.status_code == 200 and resp.json()["status"] == "error", resp.text
    manage(studio.home, "create_user", "rater1", "--role", "evaluator", env=studio.env)
    rater_key = manage(studio.home, "create_api_key", "rater1", env=studio.env).stdout.strip()
    for headers in ({}, {"Authorization": f"Bearer {rater_key}"}):  # nobody, and an evaluator, who may not upload
        resp = httpx.post(studio.url + "/v1/files", files={"file": ("big.jsonl", big)},
                          data={"purpose": "fine-tune"}, headers=headers, timeout=120)
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
