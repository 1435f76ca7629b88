"""Rating tasks: creation, background generation, the evaluator's queue, privacy, closing."""

import io
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from playground.generation import generate_outputs
from playground.models import Rating, RatingTask


def _jsonl(rows):
    upload = io.BytesIO("\n".join(json.dumps(r) for r in rows).encode())
    upload.name = "prompts.jsonl"
    return upload


PROMPTS = [{"messages": [{"role": "system", "content": "Answer with one intent."},
                         {"role": "user", "content": "where is my order 1234"},
                         {"role": "assistant", "content": "track_order"}]},
           {"prompt": "please cancel my order"}]


def _create(admin_client, registered, evaluators, prompts=PROMPTS, **extra):
    data = {"name": "Intent check", "snapshots": registered.names[:3], "prompt_source": "upload",
            "prompts_file": _jsonl(prompts), "evaluators": [u.pk for u in evaluators], "temperature": 0,
            "top_p": 1, "max_tokens": 5, "seed": 0, **extra}
    return admin_client.post("/playground/tasks/new/", data)


@pytest.fixture
def second_evaluator(db):
    from config.access import make_user

    user, _ = make_user("ivan", "evaluator", password="ivan-password")
    return user


def _client_for(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ready_task(admin_client, snapshots, evaluator_user, second_evaluator, monkeypatch):
    # Generate in this thread: the test database's transaction is not visible to another thread.
    monkeypatch.setattr("playground.generation.start_generation", lambda task: generate_outputs(task.pk))
    resp = _create(admin_client, snapshots, [evaluator_user, second_evaluator])
    assert resp.status_code == 302, resp.content.decode()[:2000]
    task = RatingTask.objects.get()
    return task


def _rate(client, task, item_index, best=0):
    return client.post(f"/playground/tasks/{task.public_id}/rate/", {
        "item": item_index, "score_0": 5, "score_1": 3, "score_2": 1, "comment_0": "good",
        "verdict": f"best:{best}"})


def test_a_task_stores_one_output_per_prompt_and_snapshot(ready_task, snapshots):
    task = ready_task
    task.refresh_from_db()
    assert task.status == RatingTask.READY and (task.n_items, task.n_generated) == (2, 2)
    first = task.items.get(index=0)
    assert first.expected == "track_order" and first.messages[-1]["role"] == "user"
    assert sorted(o.snapshot_name for o in first.outputs.all()) == sorted(snapshots.names[:3])
    assert all(o.status == "done" for o in first.outputs.all())


def test_the_evaluator_queue_shows_outputs_blind_then_moves_on(ready_task, evaluator_user, snapshots):
    client = _client_for(evaluator_user)
    page = client.get(f"/playground/tasks/{ready_task.public_id}/rate/")
    html = page.content.decode()
    assert page.status_code == 200 and "where is my order 1234" in html and "Model C" in html
    assert not any(name in html for name in snapshots.names[:3])
    resp = _rate(client, ready_task, 0)
    assert resp.status_code == 302
    assert "please cancel my order" in client.get(resp["Location"]).content.decode()
    _rate(client, ready_task, 1)
    done = client.get(f"/playground/tasks/{ready_task.public_id}/rate/")
    assert done.status_code == 302 and "/rate/" not in done["Location"]


def test_a_failed_output_in_the_queue_does_not_name_its_snapshot(ready_task, evaluator_user, snapshots):
    from playground.models import Output

    failed = ready_task.items.get(index=0).outputs.first()
    failed.status, failed.text = Output.ERROR, ""
    failed.error = f"The adapter of '{failed.snapshot_name}' has rank 64; the server allows 16."
    failed.save()
    html = _client_for(evaluator_user).get(f"/playground/tasks/{ready_task.public_id}/rate/?item=0").content.decode()
    assert Output.BLIND_ERROR in html
    assert not any(name in html for name in snapshots.names[:3])


def test_each_evaluator_sees_a_shuffled_order_that_stays_the_same(ready_task, evaluator_user, second_evaluator):
    item = ready_task.items.get(index=0)
    first = [o.pk for o in ready_task.order_for(evaluator_user, item)]
    assert first == [o.pk for o in ready_task.order_for(evaluator_user, item)]
    orders = {tuple(o.pk for o in ready_task.order_for(u, i)) for u in (evaluator_user, second_evaluator)
              for i in ready_task.items.all()}
    assert len(orders) > 1  # not the generation order for everyone


def test_the_shown_order_is_stored_with_the_rating(ready_task, evaluator_user):
    client = _client_for(evaluator_user)
    _rate(client, ready_task, 0, best=1)
    item = ready_task.items.get(index=0)
    rating = Rating.objects.get(rater=evaluator_user, item=item)
    shown = ready_task.order_for(evaluator_user, item)
    assert rating.shown_order == [o.public_id for o in shown]
    assert rating.best == shown[1]
    assert [(s.position, s.output_id, s.score) for s in rating.scores.all()] == [
        (0, shown[0].pk, 5), (1, shown[1].pk, 3), (2, shown[2].pk, 1)]


def test_a_raters_task_ratings_are_final_once_their_queue_is_done(ready_task, evaluator_user):
    client = _client_for(evaluator_user)
    assert _rate(client, ready_task, 0, best=0).status_code == 302
    assert _rate(client, ready_task, 0, best=1).status_code == 302  # still blind: may change
    assert _rate(client, ready_task, 1, best=0).status_code == 302
    # The queue is done: the board and the export show the names now.
    assert client.get(f"/playground/leaderboard/?task={ready_task.public_id}").status_code == 200
    again = _rate(client, ready_task, 0, best=2)
    assert again.status_code == 409 and "final" in again.content.decode()
    item = ready_task.items.get(index=0)
    assert Rating.objects.get(rater=evaluator_user, item=item).best == ready_task.order_for(evaluator_user, item)[1]
    page = client.get(f"/playground/tasks/{ready_task.public_id}/rate/?item=0").content.decode()
    assert "Save and next" not in page and "final" in page
    assert "?item=0\">Edit" not in client.get(f"/playground/tasks/{ready_task.public_id}/").content.decode()


def test_a_task_generating_again_shows_no_names_to_a_rater_who_has_not_finished(ready_task, evaluator_user,
                                                                                   second_evaluator):
    from api.models import ApiKey
    from tests.api.conftest import ApiClient

    for index in (0, 1):
        _rate(_client_for(second_evaluator), ready_task, index)
    _rate(_client_for(evaluator_user), ready_task, 0)
    RatingTask.objects.filter(pk=ready_task.pk).update(status=RatingTask.GENERATING)  # failed outputs again
    eve = _client_for(evaluator_user)
    assert eve.get(f"/playground/leaderboard/?task={ready_task.public_id}").status_code == 403
    assert "data-snapshot=" not in eve.get("/playground/leaderboard/").content.decode()
    api = ApiClient(Client(), ApiKey.issue(evaluator_user, "tests")[1])
    assert all(m["id"].startswith("blind-") for m in api.get("/v1/models").json()["data"])


def test_evaluators_do_not_see_the_seed_of_a_task(ready_task, evaluator_user, admin_client):
    assert ready_task.params["seed"] == 0
    assert "seed 0" in admin_client.get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    page = _client_for(evaluator_user).get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    assert "seed" not in page


def test_the_shuffle_comes_from_the_server_secret_not_from_ids_a_rater_sees(ready_task, evaluator_user):
    from django.test import override_settings

    items = list(ready_task.items.all())
    orders = set()
    for secret in ("one-secret", "another-secret", "a-third", "a-fourth", "a-fifth"):
        with override_settings(SECRET_KEY=secret):
            orders.add(tuple(o.pk for i in items for o in ready_task.order_for(evaluator_user, i)))
    assert len(orders) > 1


def test_one_rating_per_evaluator_per_item_editable_until_the_task_closes(ready_task, evaluator_user):
    client = _client_for(evaluator_user)
    _rate(client, ready_task, 0, best=0)
    _rate(client, ready_task, 0, best=2)
    ratings = Rating.objects.filter(rater=evaluator_user)
    assert ratings.count() == 1 and ratings.get().best == ready_task.order_for(
        evaluator_user, ready_task.items.get(index=0))[2]
    ready_task.close()
    assert _rate(client, ready_task, 0, best=1).status_code == 403
    assert Rating.objects.get(rater=evaluator_user).best.pk == ratings.get().best.pk


def test_an_evaluator_cannot_read_another_evaluators_ratings(ready_task, evaluator_user, second_evaluator):
    _rate(_client_for(second_evaluator), ready_task, 0)
    Rating.objects.filter(rater=second_evaluator).update()
    eve = _client_for(evaluator_user)
    detail = eve.get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    assert "Your ratings" not in detail and "ivan" not in detail
    page = eve.get(f"/playground/tasks/{ready_task.public_id}/rate/?item=0").content.decode()
    assert "good" not in page and "checked" not in page  # ivan's comment and scores stay his
    export = eve.get("/playground/leaderboard/export/?kind=ratings&format=jsonl").content.decode()
    assert export == ""
    assert eve.get(f"/playground/leaderboard/?task={ready_task.public_id}").status_code == 403


def test_an_unassigned_evaluator_cannot_open_the_task(ready_task, db):
    from config.access import make_user

    outsider, _ = make_user("olga", "evaluator", password="olga-password")
    client = _client_for(outsider)
    assert client.get(f"/playground/tasks/{ready_task.public_id}/").status_code == 403
    assert client.get(f"/playground/tasks/{ready_task.public_id}/rate/").status_code == 403
    assert ready_task.name not in client.get("/playground/tasks/").content.decode()


def test_only_admins_create_or_close_tasks(ready_task, evaluator_user):
    client = _client_for(evaluator_user)
    assert client.get("/playground/tasks/new/").status_code == 403
    assert client.post(f"/playground/tasks/{ready_task.public_id}/close/").status_code == 403


def test_the_task_leaderboard_and_agreement_use_its_ratings(ready_task, admin_client, evaluator_user,
                                                             second_evaluator):
    for user in (evaluator_user, second_evaluator):
        client = _client_for(user)
        for index in (0, 1):
            _rate(client, ready_task, index)
    page = admin_client.get(f"/playground/leaderboard/?task={ready_task.public_id}").content.decode()
    assert "Krippendorff" in page and page.count("data-snapshot=") == 3
    assert _client_for(evaluator_user).get(f"/playground/leaderboard/?task={ready_task.public_id}").status_code == 200


def test_prompt_file_errors_name_their_line(admin_client, snapshots, evaluator_user):
    resp = _create(admin_client, snapshots, [evaluator_user], prompts=[{"prompt": "ok"}, {"nothing": 1}, [1]])
    html = resp.content.decode()
    assert resp.status_code == 400 and "line 2" in html and "line 3" in html
    assert not RatingTask.objects.exists()


def test_a_task_needs_two_to_eight_snapshots(admin_client, snapshots, evaluator_user):
    resp = _create(admin_client, snapshots, [evaluator_user], snapshots=snapshots.names[:1])
    assert resp.status_code == 400 and "Pick 2 to 8 snapshots" in resp.content.decode()


def test_the_demo_heldout_prompts_can_be_the_prompt_set(admin_client, snapshots, evaluator_user, monkeypatch):
    from django.conf import settings

    from training.demo_data import make_demo_data, to_jsonl

    monkeypatch.setattr("playground.generation.start_generation", lambda task: None)
    (settings.ATTUNE_HOME / "demo").mkdir(exist_ok=True)
    (settings.ATTUNE_HOME / "demo" / "demo-intents-heldout.jsonl").write_text(to_jsonl(make_demo_data()[2]))
    resp = _create(admin_client, snapshots, [evaluator_user], prompt_source="demo", prompts_file="")
    assert resp.status_code == 302
    task = RatingTask.objects.get()
    assert task.n_items == 50 and task.items.first().expected


@pytest.mark.django_db(transaction=True)
def test_outputs_are_generated_by_a_background_thread(tiny_models):
    from playground.generation import start_generation
    from playground.models import TaskItem
    from tests.playground.conftest import register_snapshots

    snapshots = register_snapshots(tiny_models)
    admin = User.objects.create_user("boss", is_staff=True)
    task = RatingTask.objects.create(name="bg", created_by=admin, snapshot_names=snapshots.names[:2],
                                     params={"temperature": 0, "max_tokens": 3}, n_items=2)
    for index in range(2):
        TaskItem.objects.create(task=task, index=index, messages=[{"role": "user", "content": f"prompt {index}"}])
    thread = start_generation(task)
    assert start_generation(task) is False  # never two threads on one task
    thread.join(timeout=120)
    task.refresh_from_db()
    assert task.status == RatingTask.READY and task.n_generated == 2
    assert all(item.generated for item in task.items.all())


def test_the_overall_board_holds_a_task_back_from_an_evaluator_until_their_queue_is_done(
        ready_task, evaluator_user, second_evaluator):
    ivan = _client_for(second_evaluator)
    for index in (0, 1):
        _rate(ivan, ready_task, index)
    eve = _client_for(evaluator_user)

    def board():
        page = eve.get("/playground/leaderboard/").content.decode()
        export = eve.get("/playground/leaderboard/export/?kind=leaderboard&format=jsonl").content.decode()
        return page.count("data-snapshot="), len(export.splitlines())

    assert board() == (0, 0)  # ivan's verdicts would steer hers
    assert ivan.get("/playground/leaderboard/").content.decode().count("data-snapshot=") == 3
    for index in (0, 1):
        _rate(eve, ready_task, index)
    assert board() == (3, 3)


def test_the_admin_sees_which_snapshot_failed_and_why(ready_task, admin_client, evaluator_user):
    from playground.models import Output

    failing = ready_task.snapshot_names[1]
    Output.objects.filter(item__task=ready_task, snapshot_name=failing).update(
        status=Output.ERROR, text="", error="LoRA rank 32 is greater than max_lora_rank 16.")
    page = admin_client.get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    assert f"2 of {ready_task.n_items} outputs failed" in page and "max_lora_rank 16" in page
    assert page.count("outputs failed") == 1
    evaluator_page = _client_for(evaluator_user).get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    assert "outputs failed" not in evaluator_page and failing not in evaluator_page


def test_failed_outputs_of_unrated_prompts_are_generated_again(ready_task, admin_client, evaluator_user,
                                                                monkeypatch):
    from playground.models import Output

    monkeypatch.setattr("playground.generation.start_generation",
                        lambda task, retry_failed=False: generate_outputs(task.pk, retry_failed))
    failing = ready_task.snapshot_names[1]
    Output.objects.filter(item__task=ready_task, snapshot_name=failing).update(
        status=Output.ERROR, text="", error="The vLLM server at http://gpu:8100 does not answer.")
    _rate(_client_for(evaluator_user), ready_task, 0)
    rated_outputs = set(ready_task.items.get(index=0).outputs.values_list("pk", flat=True))
    page = admin_client.get(f"/playground/tasks/{ready_task.public_id}/").content.decode()
    assert "Generate failed outputs again (1 unrated prompts)" in page

    resp = admin_client.post(f"/playground/tasks/{ready_task.public_id}/restart/", {"retry": "failed"})
    assert resp.status_code == 302
    ready_task.refresh_from_db()
    assert ready_task.status == RatingTask.READY
    again = ready_task.items.get(index=1).outputs.get(snapshot_name=failing)
    assert again.status == Output.DONE and again.text
    # The rated prompt keeps the outputs its rating points at, the failed one included.
    assert set(ready_task.items.get(index=0).outputs.values_list("pk", flat=True)) == rated_outputs
    assert Rating.objects.get(rater=evaluator_user).scores.count() == 3
