"""Webhooks: `fine_tuning.job.succeeded | failed | cancelled`, signed per Standard Webhooks.

The body is OpenAI's webhook event,
`{"id": "evt_…", "object": "event", "created_at": s, "type": …, "data": {"id": "ftjob-…"}}`; the
headers `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
`"{id}.{timestamp}.{body}"`, keyed with the base64-decoded part of the endpoint's `whsec_` secret,
so `openai.OpenAI().webhooks.unwrap(body, headers, secret=…)` accepts them.

A job that ends sends `training.models.job_ended`; `on_job_ended` (connected in training/apps.py)
stores one delivery per subscribed endpoint with `enqueue(job, event_type)`, so the page or worker
that ended the job never waits on the network; the worker's webhook thread calls `deliver_due()`
every second. A delivery that does not get a 2xx answer is retried with exponential backoff
(`BACKOFF_S` × 2^attempt, at most `MAX_BACKOFF_S` apart) up to `MAX_ATTEMPTS` times (about 72 hours
in all, like OpenAI's), then marked failed. Every attempt's status code is kept.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from training import ids
from training.models import WebhookDelivery, WebhookEndpoint

BACKOFF_S = 5
MAX_BACKOFF_S = 6 * 3600
MAX_ATTEMPTS = 17
TIMEOUT_S = 10


def new_secret():
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id():
    return "evt_" + ids.random_tail(24)


def sign(secret, webhook_id, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers_for(delivery, timestamp=None):
    timestamp = int(timestamp if timestamp is not None else time.time())
    return {
        "content-type": "application/json",
        "user-agent": "Attune-Webhooks/1",
        "webhook-id": delivery.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(delivery.endpoint.secret, delivery.event_id, timestamp, delivery.body),
    }


def enqueue(job, event_type):
    """One pending delivery per enabled endpoint subscribed to `event_type`; returns them."""
    created = []
    for endpoint in WebhookEndpoint.objects.filter(enabled=True):
        if event_type not in (endpoint.event_types or []):
            continue
        event_id = new_event_id()
        body = json.dumps({"id": event_id, "object": "event", "created_at": int(time.time()),
                           "type": event_type, "data": {"id": job.public_id}}, separators=(",", ":"))
        created.append(WebhookDelivery.objects.create(endpoint=endpoint, event_id=event_id, event_type=event_type,
                                                      job=job, body=body))
    return created


def on_job_ended(sender, job, **kwargs):
    enqueue(job, f"fine_tuning.job.{job.status}")


def backoff(attempts):
    return min(MAX_BACKOFF_S, BACKOFF_S * 2 ** max(0, attempts - 1))


def deliver(delivery, client=None):
    """Send one delivery once; record the answer and when to try again."""
    import httpx

    now = timezone.now()
    record = {"at": int(time.time()), "status_code": None, "error": ""}
    try:
        if client is None:
            with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False) as own:
                response = own.post(delivery.endpoint.url, content=delivery.body.encode(),
                                    headers=headers_for(delivery))
        else:
            response = client.post(delivery.endpoint.url, content=delivery.body.encode(),
                                   headers=headers_for(delivery))
        record["status_code"] = response.status_code
        ok = 200 <= response.status_code < 300
        if not ok:
            record["error"] = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        ok = False
        record["error"] = f"{exc.__class__.__name__}: {exc}"[:300]
    delivery.attempts += 1
    delivery.responses = [*delivery.responses, record]
    if ok:
        delivery.status, delivery.delivered_at = WebhookDelivery.DELIVERED, now
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.FAILED
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff(delivery.attempts))
    delivery.save(update_fields=["attempts", "responses", "status", "delivered_at", "next_attempt_at"])
    return ok


def deliver_due(limit=50):
    """Send the pending deliveries whose time has come; each is taken by one sender only."""
    due = WebhookDelivery.objects.filter(status=WebhookDelivery.PENDING, next_attempt_at__lte=timezone.now())
    sent = 0
    for delivery in due.select_related("endpoint").order_by("next_attempt_at")[:limit]:
        # Push the next attempt forward first: a second worker's sender then leaves this one alone.
        with transaction.atomic():
            taken = WebhookDelivery.objects.filter(
                pk=delivery.pk, status=WebhookDelivery.PENDING, attempts=delivery.attempts,
                next_attempt_at=delivery.next_attempt_at).update(
                next_attempt_at=timezone.now() + timedelta(seconds=TIMEOUT_S * 3))
        if taken:
            deliver(delivery)
            sent += 1
    return sent
