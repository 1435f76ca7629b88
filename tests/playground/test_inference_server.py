"""The `serve_inference` ASGI app's guards: its API key and its body limit, driven in process."""

import asyncio
import json

import pytest

from playground.inference.server import InferenceServer
from playground.snapshots import Snapshot

KEY = "sk-test-key"


class Client:
    """An ASGI client: sends one request as the given body chunks and records what was read and answered."""

    def __init__(self, app):
        self.app = app

    def request(self, method, path, chunks=(), headers=()):
        chunks = list(chunks)
        self.n_received = 0
        sent = []

        async def receive():
            if self.n_received >= len(chunks):
                return {"type": "http.disconnect"}
            self.n_received += 1
            return {"type": "http.request", "body": chunks[self.n_received - 1],
                    "more_body": self.n_received < len(chunks)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path,
                 "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]}
        asyncio.run(self.app(scope, receive, send))
        status = sent[0]["status"]
        body = b"".join(m.get("body", b"") for m in sent[1:])
        return status, json.loads(body) if body.startswith(b"{") else body


@pytest.fixture
def client(tmp_path):
    return Client(InferenceServer(None, Snapshot.from_paths("tiny", tmp_path), api_key=KEY,
                                  max_body_bytes=1024 * 1024))


def auth(key=KEY):
    return ("Authorization", f"Bearer {key}")


def test_a_missing_or_wrong_key_is_refused(client):
    for headers in ((), (auth("sk-test-kez"),), (auth(KEY + "x"),), (("Authorization", "Bearer sk-tëst"),)):
        status, body = client.request("GET", "/v1/models", headers=headers)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = client.request("GET", "/v1/models", headers=[auth()])
    assert status == 200 and body["data"][0]["id"] == "tiny"


def test_a_body_declared_over_the_limit_is_refused_before_any_of_it_is_read(client):
    status, body = client.request("POST", "/v1/chat/completions", chunks=[b"{}"] * 3,
                                  headers=[auth(), ("Content-Length", "4000000000")])
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert client.n_received == 0


def test_a_body_without_a_length_is_refused_once_it_passes_the_limit(client):
    chunk = b" " * (256 * 1024)
    status, body = client.request("POST", "/v1/load_lora_adapter", chunks=[chunk] * 100, headers=[auth()])
    assert status == 413 and "1,048,576 bytes" in body["error"]["message"]
    assert client.n_received == 5  # the fifth chunk passes 1 MB; the other 95 are never read


def test_a_body_within_the_limit_is_read(client):
    status, body = client.request("POST", "/v1/unload_lora_adapter", chunks=[b'{"lora_name": ', b'"x"}'],
                                  headers=[auth(), ("Content-Length", "20")])
    assert status == 404 and body["error"]["param"] == "lora_name"
    status, body = client.request("POST", "/v1/unload_lora_adapter", headers=[auth(), ("Content-Length", "ten")])
    assert status == 400 and "Content-Length" in body["error"]["message"]
