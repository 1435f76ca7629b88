"""The navigation names its pages by URL name; a name that resolves to no page fails loudly."""

import pytest
from django.template import Context, Template
from django.urls import NoReverseMatch


def _nav_link(rf, name, path="/"):
    template = Template("{% load attune %}{% nav_link name 'Label' %}")
    return template.render(Context({"request": rf.get(path), "name": name}))


def test_a_nav_link_to_a_page_that_does_not_exist_raises(rf):
    with pytest.raises(NoReverseMatch):
        _nav_link(rf, "no_such_page")


def test_a_nav_link_is_marked_current_on_its_own_page_only(rf):
    assert _nav_link(rf, "jobs", "/jobs/") == '<a href="/jobs/" class="current" aria-current="page">Label</a>'
    assert _nav_link(rf, "jobs", "/datasets/") == '<a href="/jobs/">Label</a>'


@pytest.mark.django_db
def test_home_sends_admins_to_the_jobs_and_evaluators_to_their_rating_tasks(client, admin_user, evaluator_user):
    client.force_login(admin_user)
    assert client.get("/")["Location"] == "/jobs/"
    client.force_login(evaluator_user)
    assert client.get("/")["Location"] == "/playground/tasks/"
