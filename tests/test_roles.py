"""The role matrix over every URL the project has: anonymous users go to login,
evaluators reach only the rating, leaderboard and API-key pages, admins are never
refused and never meet a 500."""

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

PUBLIC = {"login", "logout"}
RATER_PREFIXES = ("/playground/", "/settings/")
RATER_NAMES = {"home"}
# Under /playground/ but for admins: running snapshots on the compare page, creating and closing rating
# tasks, exporting checkpoints.
ADMIN_ONLY_NAMES = {"playground", "playground_snapshots", "compare_start", "rating_task_new", "rating_task_close",
                    "rating_task_restart", "checkpoint_download"}

CONVERTER_VALUES = {"int": "999999", "str": "nope-0", "slug": "nope-0", "path": "nope/0",
                    "uuid": str(uuid.UUID(int=7))}


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.name


def _fill(route):
    def value(match):
        converter = match.group(1) or "str"
        return CONVERTER_VALUES.get(converter, "nope-0")

    return "/" + re.sub(r"<(?:(\w+):)?\w+>", value, route)


def page_urls():
    urls = []
    for route, name in _walk(get_resolver().url_patterns):
        if route.startswith("v1/") or route.startswith("^") or name in PUBLIC:
            continue
        if route.startswith("admin/"):
            continue
        urls.append((_fill(route), name))
    return urls


URLS = page_urls()


def test_the_matrix_covers_the_pages_that_exist():
    names = {name for _, name in URLS}
    assert {"home", "datasets", "dataset_detail", "users"} <= names


@pytest.mark.django_db
@pytest.mark.parametrize("url, name", URLS)
def test_anonymous_users_are_sent_to_login(client, url, name):
    codes = []
    for method in (client.get, client.post):
        resp = method(url)
        codes.append(resp.status_code)
        if resp.status_code == 302:
            assert resp["Location"].startswith("/login/"), (url, resp["Location"])
        else:
            assert resp.status_code == 405, (url, resp.status_code)
    assert 302 in codes, (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("url, name", URLS)
def test_evaluators_reach_only_rating_pages(evaluator_client, url, name):
    allowed = (url.startswith(RATER_PREFIXES) or name in RATER_NAMES) and name not in ADMIN_ONLY_NAMES
    codes = [evaluator_client.get(url).status_code, evaluator_client.post(url).status_code]
    assert 500 not in codes, (url, codes)
    if allowed:
        assert 403 not in codes, (url, codes)
    else:
        refused = {403, 404, 405} if name in ADMIN_ONLY_NAMES else {403, 405}
        assert set(codes) <= refused and codes != [405, 405], (url, codes)


@pytest.mark.django_db
@pytest.mark.parametrize("url, name", URLS)
def test_admins_are_never_refused(admin_client, url, name):
    codes = [admin_client.get(url).status_code, admin_client.post(url).status_code]
    assert 403 not in codes and 500 not in codes, (url, codes)
