"""One rank of a simulated torchrun run on this CPU, for tests/test_distributed.py.

Run as a script with torchrun's variables set (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT): `python tests/ddp_node.py DATA HEADROOM_MIB OUT.json`. Local rank 0
fits the node's batch on the CPU against a memory budget: 8 GiB with HEADROOM_MIB 0, 1 MiB (too little: its fit fails)
with a negative HEADROOM_MIB, else the budget that leaves HEADROOM_MIB over what batch 1 needs in
this process. The ranks agree
(`fit.distributed.agree_across_nodes`), then create and use a gloo group on the same MASTER_PORT
as Ultralytics' trainer would (env://), and OUT.json gets the node's own batch and the agreed plan (or the error the agreement raised).
"""

from __future__ import annotations

import json
import sys

MIB = 1 << 20


def node_plan(data: str, headroom_mib: int):
    from visionbatch.fit.api import fit_batch
    from visionbatch.fit.distributed import DdpOverhead, combine_plans

    budget = 8 << 30
    if headroom_mib < 0:  # a budget below what batch 1 needs: this node's fit fails
        budget = MIB
    elif headroom_mib:
        one = fit_batch(data, imgsz=64, memory_budget=budget, batch_size=1, plan_cache=False)
        budget = int((one.peak_bytes + headroom_mib * MIB) / 0.9)
    plan = fit_batch(data, imgsz=64, memory_budget=budget, max_probes=4, plan_cache=False)
    return combine_plans([plan], DdpOverhead(0, 0))  # the node's plan: one device, no DDP share on a CPU


def main(data: str, headroom_mib: int, out: str) -> None:
    import os

    cpus = sorted(os.sched_getaffinity(0))  # one core per rank: two ranks' thread pools would fight over both
    os.sched_setaffinity(0, {cpus[int(os.environ["RANK"]) % len(cpus)]})
    import torch
    import torch.distributed as dist

    from visionbatch.errors import VisionbatchError
    from visionbatch.fit.distributed import agree_across_nodes, torchrun_env
    from visionbatch.results import to_jsonable, write_json

    env = torchrun_env()
    fitted, own = [], []

    def fit():
        fitted.append(True)
        plan = node_plan(data, headroom_mib)
        own.append(plan.per_gpu_batch)
        return plan

    try:
        agreed = agree_across_nodes(fit, env)
    except VisionbatchError as exc:
        write_json(out, {"error": type(exc).__name__, "message": str(exc), "fitted": bool(fitted)})
        return
    # what Ultralytics' trainer does next (BaseTrainer._setup_ddp): its own group, env://, on the same MASTER_PORT.
    # (Only once, as the trainer does: torch's own default group, created twice in one process under torchrun's
    # agent store, can hang on the first one's stale keys, visionbatch or not.)
    dist.init_process_group("gloo", init_method="env://", rank=env.rank, world_size=env.world_size)
    value = torch.tensor([agreed.per_gpu_batch])
    dist.all_reduce(value)
    dist.destroy_process_group()
    write_json(out, {"own_batch": own[0] if own else None, "plan": to_jsonable(agreed), "sum": int(value.item())})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
    print(json.dumps({"done": True}))
