"""Servers the tests start in a subprocess, and the one rule for a system program they need.

- `need_system(program, what)`: the path of a system program (Chromium, PostgreSQL, redis-server). When it
  is missing the test fails under CI=true (CI must run every test) and is skipped elsewhere, with the Debian
  package to install.
- The studio: `studio_env`, `manage` (a `manage.py` command over a data folder), `start_studio` and
  `stop_studio` (`manage.py serve` on a free loopback port, as `make run` starts it), `copy_home`,
  `settings_of_a_fresh_process`, `wait_until_serving`, `post_oversized_body`. The fixtures built on them
  (`demo_home`, `studio`) are in tests/conftest.py.
- `postgres_server`: a fresh cluster (initdb) in a temporary folder, listening on a free loopback
  port, trust auth; yields a `PostgresServer` with `.url(dbname)` and `.create_database(name)`
  (which returns a DATABASE_URL for a new, empty database).
- `redis_server`: redis-server on a free loopback port, no persistence; yields its REDIS_URL.
- `slurm_cluster`: a one-node Slurm cluster (Debian's slurm-wlm: slurmctld and slurmd, as root, with MUNGE
  authentication) on free loopback ports, its state and spool in a temporary folder; yields a
  `SlurmCluster` with `.env` (SLURM_CONF for the client commands) and `.partition`.

Both server fixtures have session scope (tests/conftest.py registers this module as a plugin) and are
stopped at the end of the session. PostgreSQL refuses to run as root, so as root the server runs as the
`postgres` user through `runuser`.

A user made in a studio's process (`manage.py create_user`, bootstrap_demo's admin) gets the real password
hasher: the fast one of tests/conftest.py is set in the test process only.
"""

import contextlib
import glob
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def need_system(program, what, package=None):
    """The path of `program`: a name looked up on PATH, or a path (the newest of a glob's matches).
    Missing, the test fails under CI=true and is skipped elsewhere, naming `package` to install."""
    if "/" in program:
        found = sorted(glob.glob(program))
        path = found[-1] if found else None
    else:
        path = shutil.which(program)
    if path is None:
        message = f"{what} is not installed (no {program}): apt-get install {package or Path(program).name}"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(message + " (CI=true: CI must run the tests that need it)", pytrace=False)
        pytest.skip(message)
    return Path(path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the studio ---------------------------------------------------------------------------------

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


# --- PostgreSQL and Redis --------------------------------------------------------------------

def _wait_for_port(port, process, log, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{Path(log).read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} in {seconds} s:\n{Path(log).read_text()[-2000:]}")


def _stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # PostgreSQL: fast shutdown; Redis: clean exit
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class PostgresServer:
    port: int
    user: str = "postgres"

    def url(self, dbname="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name):
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = need_system("/usr/lib/postgresql/*/bin/postgres", "PostgreSQL", "postgresql").parent
    root = Path(tempfile.mkdtemp(prefix="attune-pg-"))
    data, sockets, log = root / "data", root / "run", root / "postgres.log"
    sockets.mkdir()
    as_postgres = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    port = free_port()
    with open(log, "w") as out:
        if os.geteuid() == 0:
            shutil.chown(log, "postgres")
        process = subprocess.Popen(
            [*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=100"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        server = PostgresServer(port=port)
        deadline = time.monotonic() + 30
        while True:  # listening is not yet accepting: wait for the first real connection
            try:
                import psycopg

                psycopg.connect(server.url(), connect_timeout=2).close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    binary = need_system("redis-server", "Redis", "redis-server")
    root = Path(tempfile.mkdtemp(prefix="attune-redis-"))
    port = free_port()
    log = root / "redis.log"
    with open(log, "w") as out:
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(root), "--protected-mode", "yes"],
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class SlurmCluster:
    conf: Path
    partition: str = "attune"

    @property
    def env(self):
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args):
        done = subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=30)
        return done.stdout


SLURM_CONF = """ClusterName={name}
SlurmctldHost={host}({controller})
MailProg=/bin/true
SlurmctldPort={ctl_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=10
MinJobAge=600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{node_lines}
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _munge_running():
    munge = shutil.which("munge")
    return munge is not None and subprocess.run(f"{munge} -n | unmunge", shell=True,
                                                capture_output=True).returncode == 0


def _start_munge():
    munged = need_system("/usr/sbin/munged", "MUNGE", "munge")
    if _munge_running():
        return
    # munged runs as its own user, with its socket folder owned by it.
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", str(munged)], check=True, capture_output=True)
    deadline = time.monotonic() + 10
    while not _munge_running():
        if time.monotonic() > deadline:
            raise RuntimeError("munged did not answer")
        time.sleep(0.2)


@contextlib.contextmanager
def _slurm_cluster(name, nodes, controller="127.0.0.1"):
    """slurmctld and one slurmd per node of `nodes` [(node name, address, the command slurmd runs under)], on
    free ports, with their state in a temporary folder; yields the SlurmCluster once every node is idle."""
    slurmctld = need_system("slurmctld", "Slurm", "slurm-wlm")
    slurmd = need_system("slurmd", "Slurm", "slurm-wlm")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root")
    _start_munge()
    root = Path(tempfile.mkdtemp(prefix="attune-slurm-"))
    (root / "state").mkdir()
    cluster = SlurmCluster(conf=root / "slurm.conf")
    cpus = os.cpu_count() or 1
    cluster.conf.write_text(SLURM_CONF.format(
        name=name, ctl_port=free_port(), node_port=free_port(), root=root, partition=cluster.partition,
        controller=controller, host=socket.gethostname().split(".")[0],
        node_lines="\n".join(f"NodeName={node} NodeAddr={addr} CPUs={cpus} State=UNKNOWN"
                             for node, addr, _ in nodes)))
    for node, _, _ in nodes:
        (root / f"spool-{node}").mkdir()
    env = {**os.environ, **cluster.env}
    logs = [open(root / "slurmctld.log", "w")] + [open(root / f"slurmd-{node}.log", "w") for node, _, _ in nodes]
    processes = [subprocess.Popen([str(slurmctld), "-D", "-i", "-f", str(cluster.conf)], env=env, stdout=logs[0],
                                  stderr=subprocess.STDOUT)]
    for (node, _, under), log in zip(nodes, logs[1:], strict=True):
        processes.append(subprocess.Popen([*under, str(slurmd), "-D", "-f", str(cluster.conf), "-N", node],
                                          env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 60
        while (states := cluster.run("sinfo", "-h", "-N", "-o", "%t").split()) != ["idle"] * len(nodes):
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"{Path(log.name).name} exited: {Path(log.name).read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm nodes did not come up ({states}): "
                                   + " | ".join(Path(log.name).read_text()[-1000:] for log in logs[1:]))
            time.sleep(0.5)
        yield cluster
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        for log in logs:
            log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node cluster on loopback."""
    with _slurm_cluster("attune-test", [("attune-node1", "127.0.0.1", [])]) as cluster:
        yield cluster


# Two "hosts" on this one: node 1 in this host's network, node 2 in a network namespace of its own, joined by
# a veth pair; each slurmd has a hostname of its own (a UTS namespace) and an /etc/hosts that names both
# nodes, so torchrun's rendezvous and gloo find each node at its own address, as on a real cluster.
PAIR_NETNS = "attune-node2"
PAIR_LINK = ("attune-veth1", "attune-veth2")
PAIR_ADDRESSES = ("198.18.0.1", "198.18.0.2")  # the range set aside for network tests


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _pair_network_down():
    _ip("netns", "del", PAIR_NETNS, check=False)
    _ip("link", "del", PAIR_LINK[0], check=False)


@pytest.fixture(scope="session")
def slurm_two_nodes(tmp_path_factory):
    """A two-node cluster: attune-node1 and attune-node2 at their own addresses (see PAIR_NETNS)."""
    need_system("ip", "iproute2", "iproute2")
    unshare = need_system("unshare", "util-linux", "util-linux")
    nsenter = need_system("nsenter", "util-linux", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("the test Slurm cluster runs its daemons as root, and makes a network namespace")
    _pair_network_down()  # what a killed run left
    (first, second), (one, two) = PAIR_LINK, PAIR_ADDRESSES
    for step in (("netns", "add", PAIR_NETNS), ("link", "add", first, "type", "veth", "peer", "name", second),
                 ("link", "set", second, "netns", PAIR_NETNS), ("addr", "add", f"{one}/24", "dev", first),
                 ("link", "set", first, "up"),
                 ("-n", PAIR_NETNS, "addr", "add", f"{two}/24", "dev", second),
                 ("-n", PAIR_NETNS, "link", "set", second, "up"), ("-n", PAIR_NETNS, "link", "set", "lo", "up")):
        _ip(*step)
    hosts = tmp_path_factory.mktemp("pair") / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{one} attune-node1 {socket.gethostname()}\n{two} attune-node2\n")

    def as_host(name):
        # its own hostname, and the hosts file above on /etc/hosts in a mount namespace of its own
        return [str(unshare), "--uts", "--mount", "--", "sh", "-c",
                f'mount --bind {hosts} /etc/hosts && hostname {name} && exec "$@"', "sh"]

    nodes = [("attune-node1", one, as_host("attune-node1")),
             ("attune-node2", two, [str(nsenter), f"--net=/run/netns/{PAIR_NETNS}", *as_host("attune-node2")])]
    try:
        with _slurm_cluster("attune-pair", nodes, controller=one) as cluster:
            yield cluster
    finally:
        _pair_network_down()
