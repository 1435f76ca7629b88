"""The engine across processes on this host: two torchrun "nodes" meeting at a c10d rendezvous on the
loopback (gloo), against one process with the same global batch; and FSDP, which a host without a GPU
refuses. `pytest -k 'multinode or fsdp'` runs them."""

import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.training.engine_helpers import REPO, demo_files, engine_env, of_type, run_subprocess, write_spec
from training.launch import engine_command

torch = pytest.importorskip("torch")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spec_in(folder, **fields):
    folder.mkdir()
    return write_spec(folder, **fields)


def train_losses(lines):
    return [line["train_loss"] for line in of_type(lines, "metrics")]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_multinode_two_nodes_train_as_one_process_and_report_once(tmp_path, tiny_model):
    train, valid = demo_files(tmp_path)
    common = dict(model=str(tiny_model), training_file=str(train), validation_file=str(valid), n_epochs=1)
    one = spec_in(tmp_path / "one", **common)
    two = spec_in(tmp_path / "two", n_nodes=2, **common)
    nodes = run_two_nodes(two)
    for status, _lines, err in nodes:
        assert status == 0, err[-2000:]
    printed = [node_lines for _status, node_lines, _err in nodes]
    # Which node is rank 0 is the rendezvous's choice: one of them prints everything, the other nothing.
    assert sorted(len(lines) > 0 for lines in printed) == [False, True]
    lines = printed[0] or printed[1]
    assert of_type(lines, "started")[0]["world_size"] == 2
    # 48 examples, global batch 8 (4 on each node): 6 steps, each reported once.
    assert [line["step"] for line in of_type(lines, "metrics")] == [1, 2, 3, 4, 5, 6]
    assert len(of_type(lines, "checkpoint")) == 1 and lines[-1]["type"] == "done"
    assert [p.name for p in (tmp_path / "two/job/checkpoints").iterdir()] == ["epoch-1-step-6"]
    assert not list((tmp_path / "two/job/.trainer").glob("checkpoint-*"))

    status, alone, err = run_subprocess(one)
    assert status == 0, err[-2000:]
    # Measured: the largest relative difference over the 6 steps was 8.6e-8, and 4.7e-8 on full_valid_loss
    # (float32 sums in another order); 1e-5 leaves a hundredfold margin.
    assert train_losses(lines) == pytest.approx(train_losses(alone), rel=1e-5)
    assert of_type(lines, "eval", scope="full")[0]["full_valid_loss"] == pytest.approx(
        of_type(alone, "eval", scope="full")[0]["full_valid_loss"], rel=1e-5)


def run_two_nodes(spec, *, resume=False):
    """Both nodes' (exit status, lines, stderr), in the order they were started."""
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen(engine_command(spec, n_gpus=1, resume=resume, n_nodes=2, rdzv_endpoint=endpoint,
                                             rdzv_id="ftjob-t-1"),
                              cwd=REPO, env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    return [(node.returncode, [json.loads(line) for line in out.splitlines()], err)
            for node, (out, err) in zip(nodes, outputs, strict=True)]


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_multinode_resume_from_epoch_1_reproduces_epoch_2(tmp_path, tiny_model):
    train, _ = demo_files(tmp_path)
    spec = spec_in(tmp_path / "two", model=str(tiny_model), training_file=str(train), n_epochs=2, n_nodes=2)
    first = run_two_nodes(spec)
    assert all(status == 0 for status, _, _ in first), first[0][2][-2000:]
    lines = first[0][1] or first[1][1]
    shutil.rmtree(tmp_path / "two/job/checkpoints/epoch-2-step-12")
    again = run_two_nodes(spec, resume=True)
    assert all(status == 0 for status, _, _ in again), again[0][2][-2000:]
    resumed = again[0][1] or again[1][1]
    assert of_type(resumed, "started")[0]["resumed_from"].endswith("epoch-1-step-6")
    assert [line["step"] for line in of_type(resumed, "metrics")] == [7, 8, 9, 10, 11, 12]
    assert train_losses(resumed) == pytest.approx(train_losses(lines)[6:], rel=1e-5)


def test_multinode_command_runs_one_torchrun_per_node_meeting_at_the_rendezvous():
    command = engine_command("spec.json", n_gpus=4, n_nodes=2, rdzv_endpoint="node-a:29400", rdzv_id="ftjob-x-1")
    assert command[1:] == ["-m", "training.engine.torchrun", "--nnodes", "2", "--nproc_per_node", "4",
                           "--rdzv-backend", "c10d", "--rdzv-endpoint", "node-a:29400", "--rdzv-id", "ftjob-x-1",
                           "-m", "training.engine", "spec.json"]
    ranked = engine_command("spec.json", n_gpus=4, resume=True, n_nodes=2, node_rank=1,
                            rdzv_endpoint="node-a:29400", rdzv_id="ftjob-x-2")
    assert ranked[7:9] == ["--node-rank", "1"] and ranked[-1] == "--resume"
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        engine_command("spec.json", n_nodes=2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is a host without a GPU's")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores")
def test_fsdp_is_refused_on_a_host_without_a_gpu_naming_distributed(tmp_path, tiny_model):
    # accelerate turns FSDP on only for GPU-like devices; on CPUs it would run plain DDP and say nothing.
    train, _ = demo_files(tmp_path)
    spec = write_spec(tmp_path, model=str(tiny_model), training_file=str(train), n_epochs=1, adapter="full",
                      n_gpus=2, distributed="fsdp")
    proc = subprocess.run(engine_command(spec, n_gpus=2), cwd=REPO, env=engine_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["error"] and lines[0]["code"] == "invalid_spec"
    assert lines[0]["message"].startswith("distributed fsdp needs GPUs") and "ddp" in lines[0]["message"]
    assert not (tmp_path / "job/checkpoints").exists()
