"""Ratings become DPO pairs: hand-made ratings with known answers, the preview page and the stored file."""

import json

import pytest

from playground.models import Output, Rating, RatingTask, TaskItem
from playground.preferences import preference_jsonl, preference_pairs
from tests.factories import make_user
from training.datasets import iter_examples
from training.models import DataFile


def make_task(admin, n_items=3, names=("base", "tuned", "other")):
    task = RatingTask.objects.create(name="style", created_by=admin, snapshot_names=list(names),
                                     status=RatingTask.READY, n_items=n_items)
    items = []
    for index in range(n_items):
        item = TaskItem.objects.create(task=task, index=index, messages=[
            {"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"question {index}"}])
        for position, name in enumerate(names):
            Output.objects.create(item=item, position=position, snapshot_name=name, status="done",
                                  text=f"{name} answer {index}")
        items.append(item)
    return task, items


def rate(rater, item, scores, verdict, best=None):
    """`scores` by snapshot name; `best` a snapshot name."""
    outputs = list(item.outputs.order_by("position"))
    by_name = {o.snapshot_name: o for o in outputs}
    shown = [by_name[name] for name in scores]
    best_position = list(scores).index(best) if best else None
    return Rating.save_for(rater, shown, dict(enumerate(scores.values())), {}, verdict, best_position, item=item)


def ratings_of(task):
    return Rating.objects.filter(item__task=task).prefetch_related("scores__output").order_by("id")


@pytest.mark.django_db
def test_pairs_prefer_the_best_pick_over_outputs_scored_at_least_the_margin_below_it():
    admin, ann, bob = make_user(), make_user("evaluator", "ann"), make_user("evaluator", "bob")
    task, items = make_task(admin)
    rate(ann, items[0], {"base": 2, "tuned": 5, "other": 4}, "best", "tuned")  # tuned > base (gap 3), > other (1)
    rate(ann, items[1], {"base": 3, "tuned": 3, "other": 3}, "tie")
    rate(ann, items[2], {"base": 1, "tuned": 1, "other": 1}, "all_bad")
    rate(bob, items[0], {"tuned": 5, "base": 1, "other": 5}, "best", "tuned")  # again tuned > base; other equal

    pairs, counts = preference_pairs(ratings_of(task), margin=2)
    assert [(p.preferred.snapshot_name, p.rejected.snapshot_name) for p in pairs] == [("tuned", "base")]
    assert pairs[0].score_gap == 4 and len(pairs[0].rating_ids) == 2  # two raters agree: one pair
    assert counts == {"ratings": 4, "ties": 1, "all_bad": 1, "no_gap": 0, "same_text": 0, "conflicting": 0,
                      "pairs": 1}
    line = json.loads(preference_jsonl(pairs))
    assert line == {"input": {"messages": items[0].messages},
                    "preferred_output": [{"role": "assistant", "content": "tuned answer 0"}],
                    "non_preferred_output": [{"role": "assistant", "content": "base answer 0"}]}

    # A margin of 1 also takes "other" (4 against tuned's 5) from ann's rating; bob scored it 5, no gap.
    pairs, counts = preference_pairs(ratings_of(task), margin=1)
    assert sorted((p.preferred.snapshot_name, p.rejected.snapshot_name) for p in pairs) == [
        ("tuned", "base"), ("tuned", "other")]
    with pytest.raises(ValueError, match="margin must be a whole number from 0 to 4"):
        preference_pairs(ratings_of(task), margin=7)


@pytest.mark.django_db
def test_raters_who_disagree_on_a_prompt_give_no_pair_and_failed_or_identical_outputs_none_either():
    admin, ann, bob = make_user(), make_user("evaluator", "ann"), make_user("evaluator", "bob")
    task, items = make_task(admin, n_items=2, names=("base", "tuned"))
    rate(ann, items[0], {"base": 1, "tuned": 5}, "best", "tuned")
    rate(bob, items[0], {"base": 5, "tuned": 1}, "best", "base")
    Output.objects.filter(item=items[1], snapshot_name="base").update(text="tuned answer 1")  # the same text
    rate(ann, items[1], {"base": 1, "tuned": 5}, "best", "tuned")
    pairs, counts = preference_pairs(ratings_of(task), margin=1)
    assert pairs == [] and counts["conflicting"] == 2 and counts["same_text"] == 1 and counts["no_gap"] == 0
    Output.objects.filter(item=items[1], snapshot_name="base").update(text="x", status="error")
    assert preference_pairs(ratings_of(task), margin=1)[1]["no_gap"] == 1  # a failed output pairs with nothing


@pytest.mark.django_db
def test_the_task_page_previews_the_pairs_and_stores_them_as_a_dpo_file_linked_to_the_task(admin_client, admin_user):
    ann = make_user("evaluator", "ann")
    task, items = make_task(admin_user, n_items=7)
    for item in items[:6]:
        rate(ann, item, {"base": 2, "tuned": 5, "other": 4}, "best", "tuned")
    rate(ann, items[6], {"base": 3, "tuned": 3, "other": 3}, "tie")
    url = f"/playground/tasks/{task.public_id}/preferences/"
    page = admin_client.get(url, {"margin": "2"}).content.decode()
    assert "6 pairs" in page and "1 tie" in page and "tuned answer 0" in page and "base answer 0" in page
    assert admin_client.get(url, {"margin": "9"}).status_code == 400
    # 6 pairs at margin 2: fewer than a training file takes, so nothing is stored.
    refused = admin_client.post(url, {"margin": "2"})
    assert refused.status_code == 400 and "at least 10: nothing was stored" in refused.content.decode()
    assert not DataFile.objects.exists()

    response = admin_client.post(url, {"margin": "1"})  # 12 pairs: tuned over base and over other
    data_file = DataFile.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/datasets/{data_file.public_id}/"
    assert data_file.format == "preference" and data_file.status == "processed" and data_file.n_examples == 12, \
        data_file.errors
    assert data_file.origin == {"rating_task": task.public_id, "margin": 1, "n_ratings": 7}
    lines = list(iter_examples(data_file.full_path))
    assert {line["non_preferred_output"][0]["content"] for line in lines[:2]} == {"base answer 0", "other answer 0"}
    assert all(line["preferred_output"][0]["content"].startswith("tuned") for line in lines)
    detail = admin_client.get(f"/datasets/{data_file.public_id}/").content.decode()
    assert f"/playground/tasks/{task.public_id}/" in detail
    link = f"/jobs/new/?method=dpo&amp;training_file={data_file.public_id}"
    assert link in detail
    # "Fine-tune on it" opens the form with DPO and the file picked.
    form = admin_client.get(link.replace("&amp;", "&")).content.decode()
    assert f'<option value="{data_file.public_id}" selected' in form
    assert '<option value="dpo" selected' in form


@pytest.mark.django_db
def test_no_pairs_is_said_and_stores_nothing(admin_client, admin_user):
    task, _items = make_task(admin_user)
    response = admin_client.post(f"/playground/tasks/{task.public_id}/preferences/", {"margin": "1"})
    assert response.status_code == 400 and "No pairs at this margin: nothing was stored" in response.content.decode()
    assert not DataFile.objects.exists()


@pytest.mark.django_db
def test_evaluators_cannot_build_preference_files(evaluator_client, evaluator_user, admin_user):
    task, _items = make_task(admin_user)
    task.evaluators.add(evaluator_user)
    url = f"/playground/tasks/{task.public_id}/preferences/"
    assert evaluator_client.get(url).status_code == 403
    assert evaluator_client.post(url, {"margin": "1"}).status_code == 403
    assert not DataFile.objects.exists()
    assert "make-preference-file" not in evaluator_client.get(f"/playground/tasks/{task.public_id}/").content.decode()


def make_comparisons(admin, n, names=("base", "tuned")):
    from playground.models import Comparison

    made = []
    for index in range(n):
        comparison = Comparison.objects.create(created_by=admin, status=Comparison.FINISHED, messages=[
            {"role": "user", "content": f"playground question {index}"}])
        outputs = [Output.objects.create(comparison=comparison, position=position, snapshot_name=name,
                                         status="done", text=f"{name} says {index}")
                   for position, name in enumerate(names)]
        made.append((comparison, outputs))
    return made


@pytest.mark.django_db
def test_rated_playground_comparisons_make_a_preference_file_narrowed_by_snapshot_and_rater(admin_client,
                                                                                          admin_user):
    ann = make_user("evaluator", "ann")
    for comparison, outputs in make_comparisons(admin_user, 10) + make_comparisons(admin_user, 2, ("x", "y")):
        # The second output is the best, 3 points above the first; ann rates the first two as well.
        Rating.save_for(admin_user, outputs, {0: 2, 1: 5}, {}, "best", 1, comparison=comparison)
        if comparison.messages[0]["content"].endswith((" 0", " 1")):
            Rating.save_for(ann, outputs, {0: 3, 1: 4}, {}, "best", 1, comparison=comparison)
    page = admin_client.get("/playground/").content.decode()
    assert 'href="/playground/preferences/"' in page

    preview = admin_client.get("/playground/preferences/", {"margin": "2"}).content.decode()
    # 12 ratings of the admin's and 4 of ann's, whose gap of 1 is below the margin.
    assert "<strong>12 pairs</strong> from 16 ratings" in preview
    preview = admin_client.get("/playground/preferences/", {"margin": "1", "snapshot": "tuned",
                                                              "rater": "ann"}).content.decode()
    assert "<strong>2 pairs</strong> from 2 ratings" in preview and "tuned says 0" in preview

    resp = admin_client.post("/playground/preferences/", {"margin": "2", "snapshot": "tuned"})
    stored = DataFile.objects.get()
    assert resp.status_code == 302 and resp["Location"] == f"/datasets/{stored.public_id}/"
    assert stored.format == "preference" and stored.n_examples == 10
    assert stored.origin == {"comparisons": {"snapshot": "tuned"}, "margin": 2, "n_ratings": 12}
    lines = list(iter_examples(stored.full_path))
    assert {line["preferred_output"][0]["content"] for line in lines} == {f"tuned says {i}" for i in range(10)}
    assert "rated playground comparisons" in admin_client.get(resp["Location"]).content.decode()

    assert admin_client.get("/playground/preferences/", {"since": "yesterday"}).status_code == 400
    assert admin_client.post("/playground/preferences/", {"margin": "2", "rater": "ann"}).status_code == 400
    assert DataFile.objects.count() == 1
