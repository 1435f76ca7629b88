"""Request bodies over the limit are refused with 413 before they are read.

Django reads a request's whole body (into memory, then a temporary file)
before any view or middleware can look at it, and for anyone, signed in or
not. `BodyLimit` wraps the ASGI application and acts first:

- a body may be at most DATA_UPLOAD_MAX_MEMORY_SIZE plus ENVELOPE bytes;
- on an upload route (UPLOAD_ROUTES) an admin, signed in (a session) or with
  a live API key, may send up to ATTUNE_MAX_UPLOAD_MB plus ENVELOPE (the
  multipart framing around the file): only admins upload;
- a Content-Length over the limit is answered at once, nothing of the body
  read; a body without one (chunked) is counted as it arrives and answered
  once it passes the limit, the rest never read.

The server must hand the application a request before its body has arrived,
as uvicorn does (daphne receives the whole body first).
"""

import functools

from asgiref.sync import sync_to_async
from django.conf import settings

ENVELOPE = 1024 * 1024
UPLOAD_ROUTES = ("api_files", "datasets", "rating_task_new")  # the views that take a file


def body_limits():
    """(the limit for any request, the limit on an upload route for an admin), in bytes."""
    return (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + ENVELOPE,
            settings.ATTUNE_MAX_UPLOAD_MB * 1024 * 1024 + ENVELOPE)


@functools.cache
def upload_paths():
    from django.urls import reverse

    return frozenset(reverse(name) for name in UPLOAD_ROUTES)


def header(scope, name):
    """An ASGI request header's value (`name` in lower-case bytes), or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


@sync_to_async
def _is_admin(scope):
    from importlib import import_module

    from django.contrib.auth import SESSION_KEY
    from django.contrib.auth.models import User
    from django.http.cookie import parse_cookie

    from api.models import ApiKey, digest

    scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return ApiKey.objects.filter(hashed_key=digest(token.strip()), revoked_at__isnull=True,
                                     owner__is_active=True, owner__is_staff=True).exists()
    session_key = parse_cookie(header(scope, b"cookie") or "").get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return False
    user_id = import_module(settings.SESSION_ENGINE).SessionStore(session_key).get(SESSION_KEY)
    return user_id is not None and User.objects.filter(pk=user_id, is_active=True, is_staff=True).exists()


async def _refuse(scope, send, limit):
    message = (f"The request body is larger than the limit of {limit // (1024 * 1024)} MB"
               + (" (ATTUNE_MAX_UPLOAD_MB)." if limit > body_limits()[0] else "."))
    if scope["path"].startswith("/v1/"):
        import json

        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "request_too_large"}}).encode()
        content_type = b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        small, large = body_limits()
        known = []

        async def limit():
            if not known:
                upload = scope["path"] in upload_paths() and await _is_admin(scope)
                known.append(large if upload else small)
            return known[0]

        declared = header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit():
            declared = int(declared)
            if declared > small and declared > await limit():
                return await _refuse(scope, send, await limit())
        received = 0
        refused = False

        async def counted_receive():
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > small and received > await limit():
                    await _refuse(scope, send, await limit())
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)
