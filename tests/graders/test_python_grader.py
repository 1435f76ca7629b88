"""The python grader and its sandbox: limits that stop one item and leave the others graded, and walls
against files, the network and processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from graders import SandboxLimits, grade_items, run_grader
from graders.sandbox import RUNNER

FAST = SandboxLimits(cpu_seconds=0.5, wall_seconds=5)


def python(source):
    return {"type": "python", "name": "code", "source": textwrap.dedent(source)}


def test_grade_reads_the_sample_and_the_item():
    grader = python("""
        import json
        def grade(sample, item):
            answer = sample["output_json"]["answer"] if sample["output_json"] else sample["output_text"]
            return 1.0 if str(answer) == item["expected"] else 0.25
    """)
    results = grade_items(grader, [('{"answer": 42}', {"expected": "42"}), ("about 41", {"expected": "42"})])
    assert [result.reward for result in results] == [1.0, 0.25]
    assert [result.passed for result in results] == [True, False]


def test_an_endless_loop_is_stopped_at_its_cpu_limit_and_the_next_item_still_grades():
    grader = python("""
        def grade(sample, item):
            while item["loop"]:
                pass
            return 1
    """)
    results = grade_items(grader, [("a", {"loop": True}), ("b", {"loop": False})], limits=FAST)
    assert results[0].error == "python_grader_runtime_error"
    assert "CPU time" in results[0].errors["python_grader_runtime_error_details"]
    assert (results[1].reward, results[1].error) == (1.0, None)


def test_a_loop_that_swallows_the_cpu_limit_is_killed_and_a_fresh_process_grades_the_rest():
    grader = python("""
        def grade(sample, item):
            while item["stuck"]:
                try:
                    sum(range(10**12))  # C code: no Python-level check until it returns
                except BaseException:
                    pass
            return 0.5
    """)
    results = grade_items(grader, [("a", {"stuck": True}), ("b", {"stuck": False}), ("c", {"stuck": False})],
                          limits=FAST)
    assert results[0].error == "python_grader_runtime_error"
    assert "stopped" in results[0].errors["python_grader_runtime_error_details"]
    assert [result.reward for result in results[1:]] == [0.5, 0.5]


def test_an_item_that_waits_without_using_cpu_is_killed_at_its_wall_clock_limit():
    grader = python("""
        import random
        def grade(sample, item):
            if item["wait"]:
                random._os.read(0, 1)  # the request pipe: nothing more comes until this item answers
            return 1
    """)
    results = grade_items(grader, [("a", {"wait": True}), ("b", {"wait": False})],
                          limits=SandboxLimits(wall_seconds=1))
    assert "wall-clock limit" in results[0].errors["python_grader_runtime_error_details"]
    assert results[1].reward == 1.0


def test_a_10_gb_allocation_fails_at_the_memory_limit():
    grader = python("""
        def grade(sample, item):
            if item["big"]:
                block = bytearray(10 * 1024 ** 3)
            return 1
    """)
    results = grade_items(grader, [("a", {"big": True}), ("b", {"big": False})], limits=FAST)
    assert results[0].error == "python_grader_runtime_error"
    assert "MemoryError" in results[0].errors["python_grader_runtime_error_details"]
    assert results[1].reward == 1.0


def test_a_socket_cannot_be_opened():
    grader = python("""
        def grade(sample, item):
            import socket
            socket.create_connection(("127.0.0.1", 80), timeout=1)
            return 1
    """)
    result = run_grader(grader, "x", limits=FAST)
    assert result.error == "python_grader_runtime_error"
    assert "not socket" in result.errors["python_grader_runtime_error_details"]


@pytest.mark.parametrize("route", [
    "open(PATH).read()",
    "random._os.read(random._os.open(PATH, 0), 100)",
    "__builtins__['__import__']('io').open(PATH).read()",
    "json.codecs.open(PATH).read()",
])
def test_a_file_outside_cannot_be_read(tmp_path, route):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    for path in ("/etc/passwd", str(secret)):
        grader = python(f"""
            import json, random
            PATH = {path!r}
            def grade(sample, item):
                return len({route})
        """)
        result = run_grader(grader, "x", limits=FAST)
        assert result.error == "python_grader_runtime_error", (route, path)
        assert "secret" not in result.errors["python_grader_runtime_error_details"].replace("secret.txt", "")


def test_a_file_cannot_be_written(tmp_path):
    target = tmp_path / "written.txt"
    grader = python(f"""
        import random
        def grade(sample, item):
            os = random._os
            os.write(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT), b"x")
            return 1
    """)
    result = run_grader(grader, "x", limits=FAST)
    assert result.error == "python_grader_runtime_error"
    assert not target.exists()


def test_printed_output_is_cut_off_at_the_output_limit():
    grader = python("""
        def grade(sample, item):
            print("x" * 1_000_000)
            raise ValueError("after printing")
    """)
    result = run_grader(grader, "x", limits=SandboxLimits(output_kb=1))
    details = result.errors["python_grader_runtime_error_details"]
    assert "ValueError: after printing" in details
    assert details.count("x") < 1100


def test_raw_output_over_the_limit_stops_the_item():
    grader = python("""
        import random
        def grade(sample, item):
            if item["flood"]:
                random._os.write(1, b"y" * 1_000_000)
            return 1
    """)
    results = grade_items(grader, [("a", {"flood": True}), ("b", {"flood": False})],
                          limits=SandboxLimits(output_kb=1, wall_seconds=5))
    assert "output limit" in results[0].errors["python_grader_runtime_error_details"]
    assert results[1].reward == 1.0


def test_a_process_cannot_be_started():
    grader = python("""
        import random
        def grade(sample, item):
            return random._os.fork()
    """)
    assert run_grader(grader, "x", limits=FAST).error == "python_grader_runtime_error"


@pytest.mark.parametrize("returned", ["float('nan')", "float('inf')", "'1.0'", "None", "True"])
def test_grade_must_return_a_finite_number(returned):
    result = run_grader(python(f"def grade(sample, item):\n    return {returned}\n"), "x", limits=FAST)
    assert (result.reward, result.error) == (0.0, "python_grader_runtime_error")


def test_an_exception_reports_the_graders_traceback_line():
    result = run_grader(python("def grade(sample, item):\n    x = 1\n    return item['missing']\n"), "x")
    details = result.errors["python_grader_runtime_error_details"]
    assert 'File "grader.py", line 3, in grade' in details
    assert "return item['missing']" in details and "KeyError" in details


def test_source_that_fails_on_load_fails_every_item():
    results = grade_items(python("raise RuntimeError('bad import')\ndef grade(s, i):\n    return 1\n"),
                          [("a", {}), ("b", {})])
    assert [result.error for result in results] == ["python_grader_runtime_error"] * 2
    assert "bad import" in results[1].errors["python_grader_runtime_error_details"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the walls need root")
def test_the_sandboxs_walls_hold_without_its_audit_hook(tmp_path):
    """The namespace, chroot and uid alone, under the audit hook: no file, no socket, no write."""
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    empty = tmp_path / "root"
    empty.mkdir(mode=0o555)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    probe = textwrap.dedent(f"""
        import json, socket, sys
        sys.path.insert(0, {str(RUNNER.parent)!r})
        import sandbox_runner
        sandbox_runner.shut_in({str(empty)!r}, {{"memory_mb": 1024, "cpu_seconds": 1, "items": 1}})
        found = {{"uid": __import__("os").getuid()}}
        for name, attempt in [("passwd", lambda: open("/etc/passwd").read()),
                              ("secret", lambda: open({str(secret)!r}).read()),
                              ("write", lambda: open("/written", "w").write("x")),
                              ("connect", lambda: socket.socket().connect(("127.0.0.1", {port})))]:
            try:
                attempt()
                found[name] = "allowed"
            except OSError as error:
                found[name] = type(error).__name__
        print(json.dumps(found))
    """)
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=30)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["uid"] not in (0, os.getuid())
    assert found["passwd"] == found["secret"] == "FileNotFoundError"
    assert found["write"] in ("PermissionError", "OSError")
    assert found["connect"] == "OSError"  # ENETUNREACH: the namespace's loopback is down
