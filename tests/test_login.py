"""Logging in: throttling per user name and address (django-axes), password rules, secure-cookie settings."""


import httpx
import pytest
from django.contrib.auth.password_validation import validate_password

from api.models import ApiKey
from config.access import make_user
from tests.servers import settings_of_a_fresh_process


def login(client, password, username="alice", address="10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


@pytest.mark.django_db
def test_a_user_name_is_locked_out_from_one_address_after_five_failed_logins(client, admin_user, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        resp = login(client, "wrong")
        assert resp.status_code == 200 and "did not match" in resp.content.decode()
    resp = login(client, "wrong")
    assert resp.status_code == 429
    html = resp.content.decode()
    assert 'id="locked-out"' in html and "“alice”" in html and "blocked for 15 minutes" in html
    # Locked: even the right password is refused from that address ...
    assert login(client, "alice-password").status_code == 429
    # ... but not from another one, and the user's API key works throughout.
    key = ApiKey.issue(admin_user, "tests")[1]
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert login(client, "alice-password", address="10.0.0.2").status_code == 302


@pytest.mark.django_db
def test_a_successful_login_starts_the_count_again(client, admin_user):
    for _ in range(4):
        login(client, "wrong")
    assert login(client, "alice-password").status_code == 302
    client.post("/logout/")
    for _ in range(4):
        assert login(client, "wrong").status_code == 200
    assert login(client, "alice-password").status_code == 302


@pytest.mark.django_db
def test_another_user_name_from_the_same_address_is_not_locked_out(client, admin_user, evaluator_user):
    for _ in range(5):
        login(client, "wrong")
    assert login(client, "eve-password", username="eve").status_code == 302


@pytest.mark.django_db
def test_a_weak_password_is_refused_and_generated_ones_pass_the_rules():
    for weak in ("password", "12345678901", "short", "carol-smith"):
        with pytest.raises(ValueError):
            make_user("carol-smith", "evaluator", password=weak)
    user, password = make_user("carol", "evaluator")
    validate_password(password, user)


PROBE = ("import json, django; from django.conf import settings; django.setup(); "
         "print(json.dumps({k: getattr(settings, k, None) for k in ('SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', "
         "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_PROXY_SSL_HEADER', "
         "'TRUST_PROXY_HEADERS', 'FORWARDED_ALLOW_IPS', 'AXES_FAILURE_LIMIT')}))")


def probe(home, **env):
    return settings_of_a_fresh_process(PROBE, home, **env)


def test_https_and_proxy_settings_are_off_unless_the_environment_turns_them_on(tmp_path):
    assert probe(tmp_path) == {
        "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False, "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False, "SECURE_PROXY_SSL_HEADER": None, "TRUST_PROXY_HEADERS": False,
        "FORWARDED_ALLOW_IPS": "127.0.0.1", "AXES_FAILURE_LIMIT": 5}
    assert probe(tmp_path, SESSION_COOKIE_SECURE="1", CSRF_COOKIE_SECURE="1", SECURE_HSTS_SECONDS="31536000",
                 SECURE_HSTS_INCLUDE_SUBDOMAINS="1", TRUST_PROXY_HEADERS="1", FORWARDED_ALLOW_IPS="10.0.0.9",
                 ATTUNE_LOGIN_FAILURE_LIMIT="3") == {
        "SESSION_COOKIE_SECURE": True, "CSRF_COOKIE_SECURE": True, "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "TRUST_PROXY_HEADERS": True, "FORWARDED_ALLOW_IPS": "10.0.0.9", "AXES_FAILURE_LIMIT": 3}


def post_logins(studio, passwords, forwarded_for):
    """Log in through the real form once per password, each from a different forged X-Forwarded-For."""
    with httpx.Client() as client:
        client.get(studio.url + "/login/")
        for i, password in enumerate(passwords):
            resp = client.post(studio.url + "/login/", data={
                "username": "admin", "password": password, "csrfmiddlewaretoken": client.cookies.get("csrftoken")},
                headers={"Referer": studio.url + "/login/", "X-Forwarded-For": forwarded_for.format(i=i)})
        return resp


@pytest.mark.slow
def test_the_server_ignores_a_forged_x_forwarded_for_so_the_lockout_holds(studio):
    resp = post_logins(studio, ["wrong"] * 5, forwarded_for="203.0.113.{i}")
    assert resp.status_code == 429 and 'id="locked-out"' in resp.text
    assert post_logins(studio, [studio.password], forwarded_for="198.51.100.{i}").status_code == 429
