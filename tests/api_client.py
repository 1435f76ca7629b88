"""Talking to /v1 through Django's test client: `ApiClient` (a bearer key on every request) and
`assert_error` (OpenAI's error envelope). The /v1 tests and the playground's API tests both use them."""

import io
import json


class ApiClient:
    """Django's test client with a bearer key on every request, answering parsed JSON."""

    def __init__(self, client, key):
        self.client = client
        self.key = key

    @classmethod
    def for_user(cls, client, user):
        """A client with a new API key of `user`'s."""
        from api.models import ApiKey

        return cls(client, ApiKey.issue(user, "tests")[1])

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


def assert_error(resp, status, param=None, code=None):
    """OpenAI's error envelope (exactly message, type, param and code; a message that says something), with
    the expected status, param and, when given, code."""
    assert resp.status_code == status, (resp.status_code, resp.content[:500])
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["message"]
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error
