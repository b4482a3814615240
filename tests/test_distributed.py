"""DDP fitting: the per-GPU batch on several simulated GPUs, the torchrun agreement with real gloo ranks on this CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import SHAPES_YAML
from test_fit import NullRunner

from visionbatch.errors import ConfigError
from visionbatch.fit.distributed import (
    FAILED,
    NOT_FITTING,
    DdpOverhead,
    DistributedPlan,
    TorchrunEnv,
    across_nodes,
    combine_plans,
    offered_batch,
    source_candidate,
)
from visionbatch.fit.probes.simulated import SimulatedProbe

MIB = 1 << 20
GIB = 1 << 30
HERE = Path(__file__).resolve().parent
# yolo11n with the shapes dataset's 5 classes: 2,590,815 parameters, 16 of them in the frozen .dfl layer, fp32
YOLO11N_SHAPES_TRAINABLE_BYTES = (2_590_815 - 16) * 4
NCCL_ASSUMED_BYTES = 512 * MIB  # calibration.json's ddp_nccl_buffer_bytes
CONTEXT_BYTES = 300 * MIB


def law(batch: int, phase: str) -> float:
    """Training 1 GiB + 100 MiB per image; validation 10 MiB per image (never the binding step)."""
    return GIB + 100 * MIB * batch if phase == "train" else 10 * MIB * batch


@pytest.fixture(scope="module")
def two_gpus() -> DistributedPlan:
    """A 3 GiB and a 2.75 GiB simulated GPU, each fitted through fit_devices with DDP's share set aside."""
    from visionbatch.fit.api import FitOptions, fit_devices
    from visionbatch.keys import visionbatch_keys
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    with offline():
        shapes_job = prepare(SHAPES_YAML, {"imgsz": 64}, visionbatch_keys("fit"), command="fit")
    probes = {0: SimulatedProbe(law, 3 * GIB, context_bytes=CONTEXT_BYTES, device="cuda:0"),
              1: SimulatedProbe(law, int(2.75 * GIB), context_bytes=CONTEXT_BYTES, device="cuda:1")}
    return fit_devices(shapes_job, FitOptions.check(memory_fraction=0.9), (0, 1), probes=probes, runner=NullRunner())


def test_each_gpu_is_fitted_with_ddp_set_aside_and_the_smallest_wins(two_gpus: DistributedPlan) -> None:
    plan = two_gpus
    held = YOLO11N_SHAPES_TRAINABLE_BYTES + NCCL_ASSUMED_BYTES + CONTEXT_BYTES  # 861,806,908 bytes per GPU
    assert plan.gradient_bucket_bytes == YOLO11N_SHAPES_TRAINABLE_BYTES and plan.nccl_buffer_bytes == NCCL_ASSUMED_BYTES
    assert plan.ddp_overhead_bytes == YOLO11N_SHAPES_TRAINABLE_BYTES + NCCL_ASSUMED_BYTES
    gpu0, gpu1 = plan.per_device
    # cuda:0: usable 3 GiB - held = 2,359,418,564; budget int(0.9 x that) = 2,123,476,707. A training step at b
    # reads 1 GiB + 300 MiB context + 100 MiB x b (above half the card, so Ultralytics' cache rule is the larger
    # peak): b <= (2,123,476,707 - 1,388,314,624) / 104,857,600 = 7.01 -> 7
    assert (gpu0.device, gpu0.usable_bytes, gpu0.budget_bytes, gpu0.batch_size) == \
        ("cuda:0", 3 * GIB - held, 2_123_476_707, 7)
    # cuda:1: usable 2.75 GiB - held = 2,090,983,108; budget 1,881,884,797: b <= 4.71 -> 4
    assert (gpu1.device, gpu1.usable_bytes, gpu1.budget_bytes, gpu1.batch_size) == \
        ("cuda:1", int(2.75 * GIB) - held, 1_881_884_797, 4)
    assert not gpu0.fits(8) and not gpu1.fits(5)  # one more image was probed on each and did not fit
    assert any("set aside for DDP" in w and "300 MiB" in w for w in gpu1.warnings)
    # every rank trains the smaller GPU's batch; Ultralytics gets the total and splits it evenly
    assert (plan.per_gpu_batch, plan.total_batch, plan.world_size, plan.devices) == (4, 8, 2, ("cuda:0", "cuda:1"))
    assert plan.accumulate == 8 and plan.governing is gpu1  # round(64 / 8)
    assert plan.reason.startswith("per-GPU batch 4: the smallest of the 2 GPUs' fits (cuda:0 7, cuda:1 4)")


def test_the_fit_cli_shows_the_per_gpu_batch_and_the_total(two_gpus: DistributedPlan) -> None:
    from visionbatch.cli.fit import FitRun, show

    text = show(FitRun(two_gpus, "runs/fit/ddp", ("runs/fit/ddp/plan.json",)))
    assert "plan: per-GPU batch 4 x 2 GPUs = batch 8 (accumulate 8 for nominal batch 64)" in text
    assert "NCCL buffers 512 MiB (assumed, not measured)" in text
    assert "train with it: visionbatch train" in text and "device=0,1 batch=8" in text


def test_a_ddp_plan_is_written_with_a_curve_per_gpu(two_gpus: DistributedPlan, tmp_path: Path) -> None:
    from visionbatch.fit.api import write_plan

    written = write_plan(two_gpus, tmp_path)
    assert [p.name for p in written] == ["plan.json", "memory_curve_cuda0.png", "memory_curve_cuda1.png"]
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert saved["per_gpu_batch"] == 4 and [p["batch_size"] for p in saved["per_device"]] == [7, 4]


def test_the_per_gpu_batch_never_exceeds_the_training_images_shared_out(two_gpus: DistributedPlan) -> None:
    small = [replace(p, workload=replace(p.workload, dataset_images=6)) for p in two_gpus.per_device]
    plan = combine_plans(small, DdpOverhead(1, 2))
    assert (plan.per_gpu_batch, plan.total_batch) == (3, 6)  # 2 ranks x 3 images cover all 6
    assert plan.warnings == ("per-GPU batch capped at 3: 2 ranks x 3 images already cover the 6 training images",)


def test_the_smallest_node_sets_every_ranks_batch() -> None:
    # 2 nodes x 2 GPUs: local rank 0 of each offers its node's per-GPU batch, the others never win the MIN
    envs = [TorchrunEnv(rank, 4, rank % 2, 2, rank // 2, 2, "node0", 29500) for rank in range(4)]
    node_batches = {0: 14, 2: 12}
    offered = [offered_batch(_node(node_batches[e.rank]) if e.rank in node_batches else None, False, e) for e in envs]
    assert offered == [14, NOT_FITTING, 12, NOT_FITTING]
    smallest = min(offered)  # what all_reduce(MIN) gives every rank
    source = min(source_candidate(value, smallest, env) for value, env in zip(offered, envs))
    assert (smallest, source) == (12, 2)  # node 1's local rank 0 broadcasts its plan
    run = across_nodes(_node(12), world_size=4, nodes=2, node=1)
    assert (run.per_gpu_batch, run.total_batch, run.world_size, run.accumulate, run.node) == (12, 48, 4, 1, 1)
    # a failed fit is always the smallest offer, so every rank hears which node failed
    assert offered_batch(None, True, envs[2]) == FAILED < smallest


def _node(per_gpu: int) -> DistributedPlan:
    from visionbatch.fit.plan import BatchPlan, WorkloadSummary

    work = WorkloadSummary("yolo11n.yaml", "detect", 5, 640, 0.0, 8, 8, 1e-3, "", True, "float16", "SGD", True, 10_000)
    plan = BatchPlan(per_gpu, per_gpu, 2 * per_gpu, None, 3, 64, 0, 0.9, "cuda:0", "GPU", None, 0, 0, 0, 0, None,
                     None, None, None, None, (), None, None, work, "", (), True, 0.0)
    return combine_plans([plan, replace(plan, device="cuda:1")], DdpOverhead(10, 20))


@pytest.mark.parametrize("argv", [["fit", "device=0,1"], ["train", "device=0,1", "batch=auto", "epochs=1"]],
                         ids=["fit", "train"])
def test_several_gpus_without_cuda_is_one_line(capsys, small_shapes: Path, workdir: Path, monkeypatch, argv) -> None:
    import torch

    from visionbatch.cli import main

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([argv[0], str(small_shapes), "imgsz=64", *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "device=0,1: no CUDA GPU is visible to torch" in err, err
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("kwargs, words", [
    ({"device": "0,1", "batch_size": 16}, "batch_size=16 with device=0,1: the one-batch check measures one GPU"),
    ({"device": "0,1", "memory_budget": "4GiB"}, "memory_budget=4GiB is for CPU fits: on device=0,1"),
    ({"device": "0,0"}, "device=0,0 names a GPU twice"),
    ({"device": "0,-1"}, "device=0,-1: Ultralytics picks idle GPUs only when training starts"),
], ids=["check", "budget", "twice", "idle"])
def test_several_gpus_refused_with_what_works(small_shapes: Path, monkeypatch, kwargs, words) -> None:
    import torch

    from visionbatch.fit.api import fit_batch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError) as caught:
        fit_batch(small_shapes, imgsz=64, **kwargs)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_train_hands_ultralytics_the_total_and_records_the_plan(small_shapes: Path, two_gpus, monkeypatch) -> None:
    import torch

    import visionbatch.fit.api as api
    from visionbatch.train.result import DistributedSummary
    from visionbatch.train.run import DDP_PLAN_NAME, choose_batch
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(api, "fit_devices", lambda job, options, gpus: calls.append(gpus) or two_gpus)
    with offline():
        job = choose_batch(prepare(small_shapes, {"imgsz": 64, "batch": "auto", "device": "0,1"}))
    assert calls == [(0, 1)]
    assert job.args["batch"] == 8 and job.batch_size == 8 and job.distributed is two_gpus
    assert job.plan is two_gpus.per_device[1]  # the governing GPU's plan: batch_plan.json and memory_vs_plan
    assert job.notes[-1].startswith("batch 8 = per-GPU batch 4 x 2 ranks (per-GPU batch 4: the smallest")
    summary = DistributedSummary.of(job.distributed, DDP_PLAN_NAME)
    assert (summary.per_gpu_batch, summary.total_batch, summary.device_batches) == (4, 8, (7, 4))


@pytest.mark.parametrize("device, words", [
    ("0,1", "device=0,1 lists 2 GPUs but torchrun started 4 processes on this node (--nproc-per-node 4): list one "
            "GPU per process, e.g. device=0,1,2,3"),
    ("cpu", "device=cpu under torchrun: Ultralytics trains DDP on CUDA GPUs named in device=, one per process: use "
            "device=0,1,2,3"),
], ids=["too-few", "cpu"])
def test_under_torchrun_each_process_needs_a_gpu(small_shapes: Path, monkeypatch, device, words) -> None:
    import torch

    from visionbatch.train.run import choose_batch
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for name, value in {"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    extra = {"memory_budget": "4GiB"} if device == "cpu" else {}
    with offline(), pytest.raises(ConfigError) as caught:
        choose_batch(prepare(small_shapes, {"imgsz": 64, "batch": "auto", "device": device, **extra}))
    assert str(caught.value) == words


# -- two real ranks on this CPU, gloo ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_ranks(data: Path, headroom_mib: tuple[int, int], out: Path, nodes: int = 2, torchrun: bool = False
               ) -> list[dict]:
    """Rank 0 and rank 1 (tests/ddp_node.py) on `nodes` nodes, agreeing over gloo; their OUT.json.

    With `torchrun`, each node is a real `torchrun --nnodes 2` agent whose store the ranks share
    (TORCHELASTIC_USE_AGENT_STORE); without, the variables are set here and rank 0 hosts the store.
    """
    port = _free_port()
    processes = []
    for rank in (0, 1):
        args = [str(HERE / "ddp_node.py"), str(data), str(headroom_mib[rank]), str(out / f"{rank}.json")]
        env = {k: v for k, v in os.environ.items() if k not in ("TORCHELASTIC_USE_AGENT_STORE", "WORLD_SIZE")}
        if torchrun:
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port), *args]
        else:
            local_rank, local_size = (0, 1) if nodes == 2 else (rank, 2)
            command = [sys.executable, *args]
            env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(local_size),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True))
    try:
        logs = [process.communicate(timeout=240)[0] for process in processes]
    finally:
        for process in processes:  # a hung rank (and torchrun's worker under it) must not outlive the test
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert [p.returncode for p in processes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return [json.loads((out / f"{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_nodes_agree_on_the_smaller_nodes_batch(make_shapes, tmp_path: Path) -> None:
    # two torchrun agents on this machine, one rank each. Node 0 fits against 8 GiB (its batch is capped at the
    # copy's 4 training images); node 1 against a budget 12 MiB over what batch 1 needs in its own process
    nodes = _two_ranks(make_shapes(4, 2), (0, 12), tmp_path, torchrun=True)
    own = [node["own_batch"] for node in nodes]
    assert own[0] == 4 and 1 <= own[1] < own[0]
    plans = [node["plan"] for node in nodes]
    assert plans[0] == plans[1]  # every rank records the same plan: the smaller node's
    plan = plans[0]
    assert (plan["per_gpu_batch"], plan["total_batch"], plan["world_size"], plan["nodes"], plan["node"]) == \
        (own[1], 2 * own[1], 2, 2, 1)
    assert plan["per_device"][0]["budget_bytes"] < 8 * GIB * 0.9
    # afterwards a process group on the same MASTER_PORT works, as Ultralytics' trainer creates one
    assert nodes[0]["sum"] == nodes[1]["sum"] == 2 * own[1]


@pytest.mark.slow
def test_only_local_rank_0_fits_and_its_failure_stops_every_rank(make_shapes, tmp_path: Path) -> None:
    # one node, two processes launched without torchrun (rank 0 hosts the store): local rank 0 fits against
    # 1 MiB (below batch 1); local rank 1 does not fit at all
    ranks = _two_ranks(make_shapes(2, 2), (-1, -1), tmp_path, nodes=1)
    assert [rank["fitted"] for rank in ranks] == [True, False]
    assert [rank["error"] for rank in ranks] == ["BudgetError", "BudgetError"]
    assert ranks[0]["message"].startswith("batch 1 does not fit")
    assert ranks[1]["message"].startswith("node 0 (rank 0) could not fit its batch: batch 1 does not fit")
