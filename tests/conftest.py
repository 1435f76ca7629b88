"""Fixtures every test package shares.

- `admin_user`, `evaluator_user`, `admin_client`, `evaluator_client`: accounts in the test database.
- `demo_home`: a data folder (ATTUNE_HOME) where `migrate` and `bootstrap_demo` have run, built once
  per test session and copied for each user of it.
- `studio`: a real Attune server (`manage.py serve`) on a free loopback port over a copy of the demo
  home: HTTP, websockets and the in-process worker, as `make run` starts them.
"""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def admin_user(db):
    from config.access import make_user

    user, _ = make_user("alice", "admin", password="alice-password")
    return user


@pytest.fixture
def evaluator_user(db):
    from config.access import make_user

    user, _ = make_user("eve", "evaluator", password="eve-password")
    return user


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def evaluator_client(client, evaluator_user):
    client.force_login(evaluator_user)
    return client


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def studio_env(home, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"ATTUNE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "config.settings",
                "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(home, *args, env=None, check=True, timeout=600):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env or studio_env(home),
                          capture_output=True, text=True, check=check, timeout=timeout)


def settings_of_a_fresh_process(probe, home, **env):
    """What `probe` (Python that prints JSON after django.setup()) prints in a process with only
    ATTUNE_HOME=`home` and `env` set: settings read from the environment at start."""
    full = {"PATH": "/usr/bin:/bin", "ATTUNE_HOME": str(home), "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=full, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copy2(src, dst)
    return dst


def copy_home(source, target):
    """Copy a data folder; model weights, which nothing writes to, are hard links, not copies."""
    models = Path(source) / "models"

    def copy(src, dst):
        return link_or_copy(src, dst) if Path(src).is_relative_to(models) else shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=copy, dirs_exist_ok=True)
    return target


@pytest.fixture(scope="session")
def demo_home_template(tmp_path_factory):
    """A migrated, bootstrapped data folder. The demo models that `make test` built in var/ are
    reused when they come from the same builder code (bootstrap_demo checks their build stamps)."""
    from training.management.commands.bootstrap_demo import DEMO_MODEL, PRETRAINED_MODEL, is_current

    home = tmp_path_factory.mktemp("demo-home")
    for name in (DEMO_MODEL, PRETRAINED_MODEL):
        built = ROOT / "var" / "models" / name
        if is_current(built, name):
            shutil.copytree(built, home / "models" / name, copy_function=link_or_copy)
    manage(home, "migrate", "--noinput")
    manage(home, "bootstrap_demo", timeout=1800)
    return home


@pytest.fixture
def demo_home(demo_home_template, tmp_path):
    return copy_home(demo_home_template, tmp_path / "home")


@dataclass
class Studio:
    url: str
    home: Path
    env: dict
    password: str
    process: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    def manage(self, *args, check=True):
        return manage(self.home, *args, env=self.env, check=check)

    def login(self, client: httpx.Client, username="admin", password=None):
        """Log an httpx client in through the real login form."""
        page = client.get(self.url + "/login/")
        token = client.cookies.get("csrftoken")
        resp = client.post(self.url + "/login/", data={
            "username": username, "password": password or self.password, "csrfmiddlewaretoken": token,
        }, headers={"Referer": self.url + "/login/"})
        assert resp.status_code in (200, 302), page.text[:200]
        return client


def start_studio(home, port=None, **env_extra):
    port = port or free_port()
    env = studio_env(home, **env_extra)
    log = home / f"serve-{port}.log"
    out = open(log, "w")
    process = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(process, url + "/login/", log, "manage.py serve", seconds=90)
    password = (home / "admin-password.txt").read_text().strip()
    return Studio(url=url, home=home, env=env, password=password, process=process, log=log)


def wait_until_serving(process, probe_url, log, what, seconds):
    """Wait for a server subprocess to answer 200 at `probe_url`; stop it and say why if it does not."""
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(probe_url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_studio(process)
            raise RuntimeError(f"{what} did not answer in {seconds} s:\n{log.read_text()}")
        time.sleep(0.3)


def post_oversized_body(url, path, declared=4_000_000_000, most=256 * 1024 * 1024, headers=None):
    """POST `path` declaring a Content-Length of `declared` bytes and stream zeros until the server answers,
    closes, or `most` bytes went out; return (the response's status or None, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    sent, response = 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                      + f"Content-Length: {declared}\r\n\r\n").encode())
        chunk = bytes(64 * 1024)
        try:
            while sent < most and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed; its answer can still be read
        try:
            response = sock.recv(4096)
        except (TimeoutError, ConnectionResetError):
            pass
    status = int(response.split(b" ")[1]) if response.startswith(b"HTTP/") else None
    return status, sent


def stop_studio(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def studio(demo_home):
    s = start_studio(demo_home)
    yield s
    stop_studio(s.process)
