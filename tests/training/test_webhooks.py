"""Webhooks: signed like OpenAI's (checked with the openai SDK), retried, listed with response codes."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from django.utils import timezone

from tests.factories import make_job, make_user
from training import webhooks
from training.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


class Receiver:
    """A real HTTP server on a loopback port that records each request and answers the next queued code."""

    def __init__(self):
        self.requests = []
        self.codes = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def job(admin_user):
    return make_job(admin_user)


def endpoint_for(url, events=None):
    return WebhookEndpoint.objects.create(url=url, secret=webhooks.new_secret(),
                                          event_types=events or WebhookEndpoint.EVENT_TYPES)


def test_a_cancelled_job_sends_an_event_the_openai_sdk_verifies(job, receiver):
    endpoint = endpoint_for(receiver.url)
    job.cancel()
    assert webhooks.deliver_due() == 1
    [(headers, body)] = receiver.requests
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    event = client.webhooks.unwrap(body, headers, secret=endpoint.secret)
    assert event.type == "fine_tuning.job.cancelled"
    assert event.data.id == job.public_id
    assert event.id.startswith("evt_") and headers["webhook-id"] == event.id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body, headers, secret=webhooks.new_secret())
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_a_failed_job_sends_the_failed_event(job, receiver):
    endpoint_for(receiver.url)
    job.fail("training_error", "The training failed.")
    webhooks.deliver_due()
    assert json.loads(receiver.requests[0][1])["type"] == "fine_tuning.job.failed"


def test_an_endpoint_gets_only_the_events_it_asked_for(job, receiver):
    endpoint_for(receiver.url, events=["fine_tuning.job.succeeded"])
    job.cancel()
    assert webhooks.deliver_due() == 0 and receiver.requests == []


def test_a_refused_delivery_is_retried_with_backoff_until_it_gets_a_2xx(job, receiver):
    endpoint_for(receiver.url)
    receiver.codes = [500, 503]
    job.cancel()
    webhooks.deliver_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=3) < wait <= timedelta(seconds=webhooks.BACKOFF_S)
    assert webhooks.deliver_due() == 0  # not due yet
    for _ in range(2):
        WebhookDelivery.objects.update(next_attempt_at=timezone.now())
        webhooks.deliver_due()
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert [r["status_code"] for r in delivery.responses] == [500, 503, 200]
    assert len(receiver.requests) == 3
    # The same event each time: same id and body, so the receiver can drop repeats.
    assert len({h["webhook-id"] for h, _ in receiver.requests}) == 1
    assert webhooks.backoff(2) == 2 * webhooks.BACKOFF_S


def test_an_unreachable_endpoint_is_given_up_after_the_last_attempt(job):
    endpoint_for("http://127.0.0.1:9/nobody-listens")
    job.cancel()
    WebhookDelivery.objects.update(attempts=webhooks.MAX_ATTEMPTS - 1)
    webhooks.deliver_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.responses[-1]["status_code"] is None and "ConnectError" in delivery.responses[-1]["error"]


def test_an_admin_adds_an_endpoint_and_sees_its_deliveries(client, admin_user, job, receiver):
    client.force_login(admin_user)
    page = client.get("/webhooks/")
    assert page.status_code == 200
    resp = client.post("/webhooks/", {"url": receiver.url, "description": "CI",
                                      "event_types": ["fine_tuning.job.cancelled"]})
    endpoint = WebhookEndpoint.objects.get()
    assert resp.status_code == 302 and resp.url == f"/webhooks/{endpoint.pk}/"
    assert endpoint.secret.startswith("whsec_") and endpoint.event_types == ["fine_tuning.job.cancelled"]
    receiver.codes = [502]
    job.cancel()
    webhooks.deliver_due()
    detail = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert endpoint.secret in detail and job.public_id in detail and "502" in detail


def test_a_bad_url_is_refused_next_to_the_field(client, admin_user):
    client.force_login(admin_user)
    page = client.post("/webhooks/", {"url": "ftp://example.com/x", "event_types": WebhookEndpoint.EVENT_TYPES})
    assert page.status_code == 200 and WebhookEndpoint.objects.count() == 0
    assert "Enter a valid URL" in page.content.decode() or "http://" in page.content.decode()


def test_an_evaluator_cannot_see_or_add_webhooks(client):
    evaluator = make_user("evaluator")
    client.force_login(evaluator)
    assert client.get("/webhooks/").status_code == 403
    assert client.post("/webhooks/", {"url": "https://example.com/"}).status_code == 403
    assert WebhookEndpoint.objects.count() == 0


def test_an_anonymous_visitor_is_sent_to_login(client):
    resp = client.get("/webhooks/")
    assert resp.status_code == 302 and "/login/" in resp.url
