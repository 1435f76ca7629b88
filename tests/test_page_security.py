"""What the pages send back to a browser: no request input echoed into HTML, no inline script or style,
and a Content-Security-Policy header that allows scripts and styles only from the studio's static files."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("playground", "dashboard", "api", "training", "config", "evals")
TEMPLATES = ROOT / "templates"


def _python_files():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts and "engine" not in path.parts:
                yield path


def _content_type(call):
    for keyword in call.keywords:
        if keyword.arg == "content_type":
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "?"
    return None


def _escaped(joined):
    """Every value put into the f-string goes through escape() or conditional_escape()."""
    return all(isinstance(part.value, ast.Call) and getattr(part.value.func, "id", "") in
               ("escape", "conditional_escape") for part in joined.values if isinstance(part, ast.FormattedValue))


def unescaped_echoes(source, filename="<source>"):
    """`HttpResponse*(f"…{value}…")` calls served as HTML (no content_type, or text/html) whose values are
    not escaped: each would hand request input to the browser as markup."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
        if not re.fullmatch(r"HttpResponse\w*", name) or name == "HttpResponseRedirect" or not node.args:
            continue
        content = node.args[0]
        formatted = [n for n in ast.walk(content) if isinstance(n, ast.JoinedStr)]
        formatted += [n for n in ast.walk(content) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                      or isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "format"]
        if not formatted:
            continue
        content_type = _content_type(node) or "text/html"
        if content_type.startswith("text/html") and not all(isinstance(f, ast.JoinedStr) and _escaped(f)
                                                            for f in formatted):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_no_response_of_the_project_echoes_input_as_unescaped_html():
    found = [hit for path in _python_files() for hit in unescaped_echoes(path.read_text(), str(path))]
    assert found == []


def test_the_echo_scan_catches_an_unescaped_f_string():
    bad = 'HttpResponseBadRequest(f"got {asked!r}")\nHttpResponse(f"<p>{name}</p>", status=400)\n'
    good = ('HttpResponseBadRequest(f"got {asked!r}", content_type="text/plain")\n'
            'HttpResponse(f"<p>{escape(name)}</p>")\nHttpResponseBadRequest("constant")\n')
    assert unescaped_echoes(bad) == ["<source>:1", "<source>:2"]
    assert unescaped_echoes(good) == []


@pytest.mark.django_db
def test_a_script_in_a_bad_item_number_never_comes_back_as_html(evaluator_user, client):
    from playground.models import RatingTask, TaskItem

    task = RatingTask.objects.create(name="t", snapshot_names=["attune-tiny", "other"], n_items=1,
                                     status=RatingTask.READY)
    task.evaluators.add(evaluator_user)
    TaskItem.objects.create(task=task, index=0, messages=[{"role": "user", "content": "hi"}])
    client.force_login(evaluator_user)
    payload = "<script>alert(document.cookie)</script>"
    resp = client.get(f"/playground/tasks/{task.public_id}/rate/", {"item": payload})
    assert resp.status_code == 400
    assert resp["Content-Type"].startswith("text/plain")
    assert resp["X-Content-Type-Options"] == "nosniff"
    assert "item must be a prompt number from 0 to 0" in resp.content.decode()


def _directives(header):
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/login/", "/jobs/", "/datasets/", "/playground/", "/playground/tasks/",
                                  "/playground/leaderboard/", "/v1/models"])
def test_every_page_carries_a_content_security_policy(client, admin_user, path):
    if path != "/login/":
        client.force_login(admin_user)
    resp = client.get(path)
    assert resp.status_code in (200, 401), (path, resp.status_code)
    directives = _directives(resp["Content-Security-Policy"])
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"] and directives["frame-ancestors"] == ["'none'"]


@pytest.mark.django_db
def test_only_the_chart_pages_allow_inline_style_and_never_inline_script(admin_client):
    directives = _directives(admin_client.get("/jobs/compare/")["Content-Security-Policy"])
    assert directives["style-src"] == ["'self'", "'unsafe-inline'"]  # plotly.js styles what it draws
    assert directives["script-src"] == ["'self'"]


def test_no_template_holds_inline_script_event_handlers_or_style():
    """What the policy would block: code and style in the markup itself (data in json_script is fine)."""
    found = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        text = path.read_text()
        name = path.relative_to(TEMPLATES)
        found += [f"{name}: <script> with a body" for m in re.finditer(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>",
                                                                     text, re.S) if m.group(1).strip()]
        found += [f"{name}: {m.group(0)}" for m in re.finditer(r"\son[a-z]+\s*=", text)]
        found += [f"{name}: {m.group(0)}" for m in re.finditer(r"\sstyle\s*=|<style", text)]
    assert found == []
