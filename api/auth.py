"""Bearer-key access for /v1, as the OpenAI API: `Authorization: Bearer <key>`.

`api_view` is the one door: it answers a wrong method with 405, a missing,
wrong or revoked key with 401, a role that may not use the endpoint with 403,
all in the OpenAI error envelope. Sessions and CSRF play no part: the key is
the credential, and `request.user` becomes its owner.

A reinforcement job's engine asks the studio's judges with a judge token
(training/launch.py signs it for the job and attempt) instead of a key. Only a
view marked `judge=True` (POST /v1/chat/completions) takes one, and only while
that job is running the attempt it was signed for; it acts as the job's
creator and may ask the models the job's grader names (`request.judge_job`).
Anywhere else, or after the attempt, it is refused as an unknown key is.
"""

import inspect
import logging
import secrets
from functools import wraps

from asgiref.sync import sync_to_async
from django.views.decorators.csrf import csrf_exempt

from api.errors import ApiError, error_response
from api.models import ApiKey
from config.access import can_rate, is_admin
from training.launch import JUDGE_TOKEN_PREFIX, read_judge_token

log = logging.getLogger(__name__)

ADMINS = "admins"
RATERS = "raters"


def _bearer(request):
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _unauthorized(message):
    return error_response(message, status=401, code="invalid_api_key",
                          headers={"WWW-Authenticate": 'Bearer realm="attune"'})


def _failure(request, exc):
    """An ApiError answers as itself; anything else is logged and answered as a 500 envelope."""
    if isinstance(exc, ApiError):
        return exc.response()
    log.error("Unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return _server_error()


def _with_request_id(response):
    response["x-request-id"] = "req_" + secrets.token_hex(16)
    return response


def api_view(*methods, allow=ADMINS, judge=False):
    """Mark a view as a /v1 endpoint for `methods`, open to admins or to raters (admins and evaluators);
    `judge`: a running reinforcement job's judge token is taken too."""

    def decorator(view):
        if inspect.iscoroutinefunction(view):
            # Async views (chat completions) stream from the inference backend; the key
            # check still runs the ORM, so it goes through a thread.
            @csrf_exempt
            @wraps(view)
            async def wrapped_async(request, *args, **kwargs):
                response = await sync_to_async(_check)(methods, allow, request, judge)
                if response is None:
                    try:
                        response = await view(request, *args, **kwargs)
                    except Exception as exc:  # noqa: BLE001 - every failure answers in the envelope
                        response = _failure(request, exc)
                return _with_request_id(response)

            return wrapped_async

        @csrf_exempt
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            response = _check(methods, allow, request, judge)
            if response is None:
                try:
                    response = view(request, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001 - every failure answers in the envelope
                    response = _failure(request, exc)
            return _with_request_id(response)

        return wrapped

    return decorator


def _server_error():
    return error_response("The server had an error while processing your request.", status=500,
                          code="server_error")


def _judge_job(token):
    """The running job whose current attempt `token` was signed for, or None."""
    from training.models import FineTuningJob

    claims = read_judge_token(token)
    if claims is None:
        return None
    job_id, attempt = claims
    job = (FineTuningJob.objects.select_related("created_by")
           .filter(public_id=job_id, status=FineTuningJob.RUNNING, attempts=attempt).first())
    if job is None or job.created_by is None or not job.created_by.is_active:
        return None
    return job


def _check(methods, allow, request, judge=False):
    """None when the request may go on (request.user is then the key's owner), else the refusal."""
    if request.method not in methods:
        response = error_response(f"Method {request.method} is not allowed on {request.path}; "
                                  f"use {' or '.join(methods)}.", status=405, code="method_not_allowed")
        response["Allow"] = ", ".join(methods)
        return response
    if "\x00" in request.path or any("\x00" in key + value for key, value in request.GET.items()):
        # PostgreSQL refuses NUL in text; say so instead of failing in the database.
        return error_response("NUL characters are not allowed in the URL.", status=400, code="invalid_url")
    token = _bearer(request)
    if token is None:
        return _unauthorized("You didn't provide an API key. Provide it in the Authorization header as "
                             "'Authorization: Bearer YOUR_KEY'; create one on /settings/api-keys/ or with "
                             "`manage.py create_api_key USERNAME`.")
    request.judge_job = None
    if token.startswith(JUDGE_TOKEN_PREFIX):
        job = _judge_job(token) if judge else None
        if job is None:
            return _unauthorized(f"Incorrect API key provided: {token[:12]}…. A job's judge token is good only "
                                 "for POST /v1/chat/completions, while that job runs the attempt it was made for.")
        key, user = None, job.created_by
        request.judge_job = job
    else:
        key = ApiKey.authenticate(token)
        if key is None:
            return _unauthorized(f"Incorrect API key provided: {token[:12]}…. It is unknown or has been revoked.")
        user = key.owner
    allowed = is_admin(user) if allow == ADMINS else can_rate(user)
    if not allowed:
        what = "admins" if allow == ADMINS else "admins and evaluators"
        return error_response(f"This endpoint is for {what}; the key's owner {user.username!r} may not use it.",
                              status=403, code="permission_denied")
    request.user = user
    request.api_key = key
    return None
