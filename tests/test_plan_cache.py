"""The plan cache (visionbatch.fit.cache): the exact key, what invalidates it, entries that survive
corruption and concurrent writers, the plan_cache=False bypass, `visionbatch cache list/clear`, and a
real CPU fit reused the second time."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing
import re
from pathlib import Path

import pytest
from test_fit import NullRunner, linear

from visionbatch.cli import main
from visionbatch.errors import ConfigError
from visionbatch.fit import api, cache
from visionbatch.fit.api import FitOptions, fit_job
from visionbatch.fit.cache import (
    cached_fit,
    clear_plans,
    key_hash,
    list_plans,
    load_plan,
    plan_from_dict,
    plan_key,
    plan_to_dict,
    store_plan,
)
from visionbatch.fit.plan import BatchPlan, PlanReuse, WorkloadSummary
from visionbatch.fit.planner import plan_batch
from visionbatch.fit.probes.simulated import SimulatedProbe
from visionbatch.infer import kept
from visionbatch.stats import SpeedEstimate, Timings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "shapes" / "data.yaml"
MIB, GIB = 1 << 20, 1 << 30
REAL_PLANS_DIR = cache.plans_dir  # conftest gives each test its own folder; these tests read XDG_CACHE_HOME
CPU = {"kind": "cpu", "cpu": "Test CPU 9000", "ram_bytes": 64 * GIB, "budget_bytes": 2 * GIB}
GPU = {"kind": "cuda", "name": "NVIDIA GeForce RTX 3060", "uuid": "GPU-0a1b2c3d-0000-1111-2222-333344445555",
       "total_bytes": 12 * GIB, "driver": "580.65.06", "cuda": "13.0", "cudnn": 91200, "memory_limit": 1.0}


@pytest.fixture
def plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plan cache where users have it, `$XDG_CACHE_HOME/visionbatch/plans`, with XDG_CACHE_HOME in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(cache, "plans_dir", REAL_PLANS_DIR)
    folder = tmp_path / "xdg" / "visionbatch" / "plans"
    assert cache.plans_dir() == folder
    return folder


@pytest.fixture(scope="module")
def job():
    """The shipped dataset prepared for a fit at imgsz=64 (checked once, read once)."""
    from visionbatch.keys import visionbatch_keys
    from visionbatch.ultralytics.job import prepare
    from visionbatch.ultralytics.offline import offline

    with offline():
        return prepare(DATA, {"imgsz": 64}, visionbatch_keys("fit"), command="fit")


def simulated_plan(batch_limit_mib: int = 100, dataset_images: int = 160) -> BatchPlan:
    """A searched plan with every part filled in (curves, samples, timings), from the simulated device."""
    workload = WorkloadSummary("yolo11n.yaml", "detect", 5, 64, 0.0, 110, 75, 0.001, "modelled", False, "float32",
                               "AdamW", True, dataset_images, max_imgsz=64, device="cpu", data=str(DATA))
    probe = SimulatedProbe(linear(GIB, batch_limit_mib * MIB, GIB, 20 * MIB), total_bytes=16 * GIB, device="cpu")
    return plan_batch(probe, NullRunner(), 0.9, dataset_images, workload)


# -- the key ------------------------------------------------------------------------------------------------


def test_the_key_is_exactly_what_shapes_the_plan(job) -> None:
    import torch
    import ultralytics

    import visionbatch
    from visionbatch.ultralytics.models import find_model_yaml

    key = plan_key(job, FitOptions.check(memory_budget="2GiB", max_probes=4), CPU)
    labels = key.pop("labels")
    assert key == {
        "format": 1,
        "device": CPU,
        "software": {"torch": torch.__version__, "ultralytics": ultralytics.__version__,
                     "visionbatch": visionbatch.__version__},
        "model": {"name": "yolo11n.yaml",
                  "sha256": hashlib.sha256(find_model_yaml("yolo11n.yaml").read_bytes()).hexdigest()},
        "task": "detect", "imgsz": 64, "amp": False, "amp_dtype": "float32", "optimizer": "AdamW", "nc": 5,
        "channels": 3, "images": {"train": 160, "val": 40},
        "train_args": {"epochs": 100, "optimizer": "auto", "nbs": 64, "deterministic": True, "fraction": 1,
                       "amp": True, "multi_scale": 0, "freeze": None, "compile": False, "channels_last": None,
                       "single_cls": False, "classes": None, "rect": False, "overlap_mask": True, "mask_ratio": 4,
                       "close_mosaic": 10, "mosaic": 1, "mixup": 0, "cutmix": 0, "copy_paste": 0,
                       "copy_paste_mode": "flip", "scale": 0.5, "translate": 0.1, "cache": False, "plots": True,
                       "val": True, "distill_model": None},
        "fit": {"memory_fraction": 0.9, "max_probes": 4},
    }
    # the shipped dataset's densest image holds 90 boxes: mosaic puts up to 110 in one image at oom_risk=0.001
    assert {k: v for k, v in labels.items() if k != "sha256"} == {
        "labels_per_image": 110, "val_labels_per_image": 75, "oom_risk": 0.001, "forced": False}
    assert re.fullmatch(r"[0-9a-f]{64}", labels["sha256"])
    # the same job, options and device give the same hash; a GPU's name decides AMP as Ultralytics does
    assert key_hash(plan_key(job, FitOptions.check(memory_budget="2GiB", max_probes=4), CPU)) == key_hash(
        {**key, "labels": labels})
    gpu = plan_key(job, FitOptions.check(), GPU)
    assert (gpu["device"], gpu["amp"], gpu["amp_dtype"]) == (GPU, True, "float16")


def _changed_job(job, **args):
    return dataclasses.replace(job, args={**job.args, **args})


CHANGES = {  # name: (job args, options, device) that differ from the base in one part
    "cpu model": ({}, {}, {**CPU, "cpu": "Other CPU"}),
    "ram": ({}, {}, {**CPU, "ram_bytes": 32 * GIB}),
    "budget": ({}, {}, {**CPU, "budget_bytes": 3 * GIB}),
    "gpu uuid": ({}, {}, {**GPU, "uuid": "GPU-ffffffff-0000-1111-2222-333344445555"}),
    "imgsz": ({"imgsz": 96}, {}, CPU),
    "epochs": ({"epochs": 50}, {}, CPU),
    "close_mosaic": ({"close_mosaic": 0}, {}, CPU),
    "mosaic": ({"mosaic": 0.5}, {}, CPU),
    "multi_scale": ({"multi_scale": 0.5}, {}, CPU),
    "optimizer": ({"optimizer": "SGD"}, {}, CPU),
    "freeze": ({"freeze": 10}, {}, CPU),
    "mask_ratio": ({"mask_ratio": 8}, {}, CPU),
    "nbs": ({"nbs": 32}, {}, CPU),
    "amp": ({"amp": False}, {}, CPU),
    "deterministic": ({"deterministic": False}, {}, CPU),
    "fraction (images)": ({"fraction": 0.5}, {}, CPU),
    "model": ({}, {}, CPU),  # replaced below: another model
    "memory_fraction": ({}, {"memory_fraction": 0.8}, CPU),
    "max_probes": ({}, {"max_probes": 5}, CPU),
    "oom_risk": ({}, {"oom_risk": 0.01}, CPU),
    "labels_per_image": ({}, {"labels_per_image": 4}, CPU),
}


@pytest.fixture(scope="module")
def base_hashes(job) -> dict[str, str]:
    options = FitOptions.check(memory_budget="2GiB")
    return {"cpu": key_hash(plan_key(job, options, CPU)), "cuda": key_hash(plan_key(job, options, GPU))}


@pytest.mark.parametrize("change", CHANGES)
def test_each_part_of_the_key_invalidates_it(job, base_hashes: dict, change: str) -> None:
    args, options, device = CHANGES[change]
    base = base_hashes[device["kind"]]
    changed_job = dataclasses.replace(job, model="yolo11s.yaml") if change == "model" else _changed_job(job, **args)
    changed = plan_key(changed_job, FitOptions.check(memory_budget="2GiB", **options), device)
    assert key_hash(changed) != base


def test_a_new_software_version_or_a_changed_model_file_invalidates_the_key(job, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from visionbatch.ultralytics.models import find_model_yaml

    options = FitOptions.check(memory_budget="2GiB")
    base = key_hash(plan_key(job, options, CPU))
    with monkeypatch.context() as patched:
        newer = {**cache.software_versions(), "ultralytics": "8.5.0"}
        patched.setattr(cache, "software_versions", lambda: newer)
        assert key_hash(plan_key(job, options, CPU)) != base
    own = tmp_path / "yolo11n.yaml"
    own.write_text(find_model_yaml("yolo11n.yaml").read_text())  # the same content: the same model hash
    first = plan_key(dataclasses.replace(job, model=str(own)), options, CPU)
    own.write_text(own.read_text() + "\n# edited\n")
    second = plan_key(dataclasses.replace(job, model=str(own)), options, CPU)
    assert first["model"]["sha256"] == plan_key(job, options, CPU)["model"]["sha256"] != second["model"]["sha256"]


def test_values_that_mean_the_same_give_the_same_key(job) -> None:
    options = FitOptions.check(memory_budget="2GiB")
    base = key_hash(plan_key(job, options, CPU))
    same = _changed_job(job, mosaic=1.0, epochs=100, fraction=1, project="elsewhere", name="other", lr0=0.02)
    assert key_hash(plan_key(same, options, CPU)) == base  # defaults spelled out; keys that shape no memory


# -- entries ------------------------------------------------------------------------------------------------


def test_a_plan_comes_back_exactly_from_its_json() -> None:
    plan = simulated_plan()
    unbounded = Timings((SpeedEstimate(8, 100.0, 0.0, math.inf, 1),), 1, 0.5, 10.0, False)
    for value in (plan, dataclasses.replace(plan, timings=unbounded, reused=PlanReuse("ab" * 32, "2026-11-30T10:02:41+00:00"))):
        text = json.dumps(plan_to_dict(value), allow_nan=False)  # strict JSON: inf is written as 'inf'
        assert plan_from_dict(BatchPlan, json.loads(text)) == value
    assert plan.timings is not None and plan.samples and plan.val_curve is not None  # every part was there


def fake_fit(plan: BatchPlan, calls: list):
    def fit() -> BatchPlan:
        calls.append(1)
        return plan
    return fit


def test_a_miss_fits_and_stores_and_a_hit_is_marked_reused(job, plans: Path) -> None:
    options, calls, plan = FitOptions.check(memory_budget="2GiB"), [], simulated_plan()
    first = cached_fit(job, options, "cpu", fake_fit(plan, calls))
    assert first == plan and calls == [1]
    entries = sorted(p.name for p in plans.iterdir())
    digest = key_hash(plan_key(job, options, cache.device_facts("cpu", options)))
    assert entries == [".lock", f"{digest}.json"]
    ticks = iter([100.0, 100.25])  # a simulated clock: the lookup took 0.25 s
    second = cached_fit(job, options, "cpu", fake_fit(plan, calls), clock=lambda: next(ticks))
    assert calls == [1] and second.reused.key == digest and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00",
                                                                         second.reused.fitted_at)
    assert dataclasses.replace(second, reused=None) == plan
    assert json.loads(json.dumps(second.to_dict()))["reused"] == {"key": digest, "fitted_at": second.reused.fitted_at,
                                                                  "seconds": 0.25}
    assert "reused" not in first.to_dict()


def test_a_reused_plans_words_reach_the_terminal_escaped(job, plans: Path) -> None:
    """The reason, warnings and device name of a reused plan come from a file on disk: an edited entry's
    escape sequences are shown as text, never sent to the terminal."""
    options, calls, plan = FitOptions.check(memory_budget="2GiB"), [], simulated_plan()
    cached_fit(job, options, "cpu", fake_fit(plan, calls))
    (entry,) = plans.glob("*.json")
    stored = json.loads(entry.read_text())
    stored["plan"]["reason"] = "fits\x1b]0;owned\x07"
    stored["plan"]["warnings"] = ["\x1b[31mred\x1b[0m"]
    stored["plan"]["device_name"] = "cpu\rX"
    entry.write_text(json.dumps(stored))
    reused = cached_fit(job, options, "cpu", fake_fit(plan, calls))
    assert calls == [1] and reused.reused is not None  # still a hit: the key is unchanged
    assert (reused.reason, reused.warnings, reused.device_name) == ("fits\\x1b]0;owned\\x07",
                                                                     ("\\x1b[31mred\\x1b[0m",), "cpu\\rX")


CORRUPTIONS = {
    "not json": lambda text: "{not json",
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "a list": lambda text: "[1, 2]",
    "binary": lambda text: "\udcff",
    "other format": lambda text: text.replace('"format": 1', '"format": 99', 1),
    "key edited": lambda text: text.replace('"max_probes": 8', '"max_probes": 9', 1),
    "wrong type": lambda text: re.sub(r'"batch_size": \d+', '"batch_size": "12"', text, count=1),
    "unknown field": lambda text: text.replace('"batch_size":', '"__class__": "os.system", "batch_size":', 1),
    "missing field": lambda text: re.sub(r'"reason": "[^"]*",', "", text, count=1),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_entry_is_a_miss_and_is_replaced(job, plans: Path, corruption: str) -> None:
    options, calls, plan = FitOptions.check(memory_budget="2GiB"), [], simulated_plan()
    cached_fit(job, options, "cpu", fake_fit(plan, calls))
    (entry,) = plans.glob("*.json")
    entry.write_text(CORRUPTIONS[corruption](entry.read_text()), encoding="utf-8", errors="surrogateescape")
    assert load_plan(entry.stem) is None
    listed = list_plans().entries
    assert len(listed) == 1 and listed[0].problem is not None  # listed, with what is wrong
    assert cached_fit(job, options, "cpu", fake_fit(plan, calls)) == plan and calls == [1, 1]  # fitted again
    assert load_plan(entry.stem)[0] == plan  # and replaced by a whole entry


def _write_many(digest: str, key: dict, plan: BatchPlan, start, times: int) -> None:
    """A writer process: wait for the other, then store the same key `times` times."""
    start.wait()
    for _ in range(times):
        store_plan(digest, key, plan)


def test_two_processes_writing_one_key_at_once_leave_one_whole_entry(plans: Path) -> None:
    key = {"format": 1, "device": CPU, "test": "concurrency"}
    digest = key_hash(key)
    ours, theirs = simulated_plan(100), simulated_plan(50)
    context = multiprocessing.get_context("spawn")  # real processes, each with its own interpreter
    start = context.Barrier(2)
    writers = [context.Process(target=_write_many, args=(digest, key, plan, start, 25)) for plan in (ours, theirs)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    assert sorted(p.name for p in plans.iterdir()) == [".lock", f"{digest}.json"]  # no temporary file left
    stored, _ = load_plan(digest)
    assert stored in (ours, theirs)
    json.loads((plans / f"{digest}.json").read_text())  # whole JSON


def test_a_cached_gpu_plan_is_reused_only_while_it_fits_the_card_now(job, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionbatch.devices import memory
    from visionbatch.devices.memory import Capacity

    usable = {"now": 16 * GIB}
    identity = {k: v for k, v in GPU.items() if k != "kind"}
    monkeypatch.setattr(memory, "gpu_identity", lambda index: identity)
    monkeypatch.setattr(memory, "cuda_capacity", lambda index: Capacity(f"cuda:{index}", GPU["name"], 16 * GIB,
                                                                        16 * GIB - usable["now"], 0, usable["now"]))
    options, calls, plan = FitOptions.check(), [], simulated_plan()
    assert plan.usable_bytes == 16 * GIB
    cached_fit(job, options, "cuda:0", fake_fit(plan, calls))
    again = cached_fit(job, options, "cuda:1", fake_fit(plan, calls))  # the same board under another index
    assert calls == [1] and again.reused is not None and again.device == again.workload.device == "cuda:1"
    usable["now"] = 8 * GIB  # another process holds half the card now
    third = cached_fit(job, options, "cuda:0", fake_fit(plan, calls))
    assert calls == [1, 1] and third.reused is None
    assert third.warnings[-1].startswith(f"the cached plan {again.reused.key[:12]} was fitted again: batch ")


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_plan(job, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(cache, "plans_dir", lambda: blocker / "plans")
    plan = simulated_plan()
    stored = cached_fit(job, FitOptions.check(memory_budget="2GiB"), "cpu", fake_fit(plan, []))
    assert stored.batch_size == plan.batch_size and stored.warnings[-1].startswith("the plan cache was not written (")


# -- fit_job's hook, and the bypass ---------------------------------------------------------------------------


@pytest.fixture
def counted_search(monkeypatch: pytest.MonkeyPatch) -> list:
    """fit_job runs for real up to the search (device, spec, model, probe); the search returns a simulated plan."""
    searches: list = []

    def search(*args, **kwargs) -> BatchPlan:
        searches.append(1)
        return simulated_plan()

    monkeypatch.setattr(api, "plan_batch", search)
    return searches


def test_fit_job_reuses_a_search_and_plan_cache_false_reads_and_writes_nothing(job, plans: Path,
                                                                             counted_search: list) -> None:
    off = FitOptions.check(memory_budget="2GiB", plan_cache=False)
    assert fit_job(job, off).reused is None and counted_search == [1]
    assert not plans.exists()  # nothing written
    on = FitOptions.check(memory_budget="2GiB")
    first = fit_job(job, on)
    (entry,) = plans.glob("*.json")
    before = entry.read_bytes()
    second = fit_job(job, on)
    assert counted_search == [1, 1] and first.reused is None and second.reused is not None
    assert second.batch_size == first.batch_size
    third = fit_job(job, off)  # an entry is there: it is neither read nor written
    assert counted_search == [1, 1, 1] and third.reused is None and entry.read_bytes() == before
    assert list(plans.glob("*.json")) == [entry]


def test_a_one_batch_check_is_never_cached(job, plans: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "cached_fit", lambda *a, **k: pytest.fail("a check went through the cache"))
    monkeypatch.setattr(api, "check_batch", lambda *a, **k: pytest.fail("stop: the check was reached"))
    with pytest.raises(pytest.fail.Exception, match="stop: the check was reached"):
        fit_job(job, FitOptions.check(memory_budget="2GiB", batch_size=4))
    assert not plans.exists()


def test_plan_cache_is_a_switch(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"^plan_cache=maybe is not a switch: use plan_cache=True or plan_cache=False$"):
        FitOptions.check(plan_cache="maybe")
    assert main(["fit", str(DATA), "memory_budget=1GiB", "plan_cache=0"]) == 2
    assert capsys.readouterr().err == ("visionbatch fit: plan_cache=0 is not a switch: use plan_cache=True or "
                                       "plan_cache=False\n")


def test_train_says_its_batch_was_reused(job, monkeypatch: pytest.MonkeyPatch) -> None:
    from visionbatch.train.run import choose_batch
    from visionbatch.values import parse_batch

    seen: list = []
    reused = dataclasses.replace(simulated_plan(), reused=PlanReuse("3fa2c1d4e5f6" + "0" * 52, "2026-11-30T10:02:41+00:00"))

    def fit(job, options, progress=None):
        seen.append(options.plan_cache)
        return reused

    monkeypatch.setattr(api, "fit_job", fit)
    auto = dataclasses.replace(job, batch=parse_batch("auto"), options={"memory_budget": "2GiB", "plan_cache": False})
    chosen = choose_batch(auto)
    assert seen == [False] and chosen.plan is reused and chosen.args["batch"] == reused.batch_size
    assert chosen.notes[-1].startswith(f"batch {reused.batch_size} from the fit (")
    assert chosen.notes[-1].endswith("; the plan was reused from the plan cache (fitted 2026-11-30 10:02 UTC, key "
                                     "3fa2c1d4e5f6): plan_cache=False fits again")


def test_fit_output_says_the_plan_was_reused() -> None:
    from visionbatch.cli.fit import FitRun, show

    fresh = simulated_plan()
    plan = dataclasses.replace(fresh, planning_s=18.7,
                               reused=PlanReuse("3fa2c1d4e5f6" + "0" * 52, "2026-11-30T10:02:41+00:00", 0.4))
    lines = show(FitRun(plan, "runs/fit/train", ("runs/fit/train/plan.json",))).splitlines()
    assert ("plan: reused from the plan cache (fitted 2026-11-30 10:02 UTC, key 3fa2c1d4e5f6); plan_cache=False "
            "fits again") in lines
    # the search's 18.7 s was the first fit's; this run searched nothing
    assert ("planned in 18.7 s when fitted (2026-11-30 10:02 UTC); reused now in 0.4 s; wrote "
            "runs/fit/train/plan.json") in lines
    fresh_lines = show(FitRun(fresh, "f", ("f",))).splitlines()
    assert not any("reused" in line for line in fresh_lines)
    assert f"planned in {fresh.planning_s:.1f} s; wrote f" in fresh_lines


# -- visionbatch cache list / clear -----------------------------------------------------------------------------


def _stored(count: int) -> list[str]:
    digests = []
    for index in range(count):
        key = {"format": 1, "device": CPU, "model": {"name": f"model{index}.yaml"}, "task": "detect", "imgsz": 64 * (index + 1)}
        digests.append(key_hash(key))
        store_plan(digests[-1], key, simulated_plan(100 + 10 * index), fitted_at=f"2026-11-3{index}T10:02:41+00:00")
    return digests


def test_cache_list_shows_each_entry(plans: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["cache", "list"]) == 0
    assert capsys.readouterr().out == f"no plans cached in {plans}\n"
    assert not plans.exists()  # listing makes no folder
    first, second = _stored(2)
    (plans / f"{'0' * 64}.json").write_text("{broken")
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"visionbatch cache: 3 plans in {plans}" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"[0-9a-f]{12} ", line)]
    assert [row[:4] for row in rows] == [[second[:12], "2026-11-31", "10:02", "CPU"],
                                        [first[:12], "2026-11-30", "10:02", "CPU"], ["0" * 12, "-", "-", "-"]]
    assert "model1.yaml" in out and f"{'0' * 12}: unusable (unreadable (JSONDecodeError))" in out

    assert main(["cache", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["folder"] == str(plans)
    assert [(e["key_hash"], e["imgsz"], e["batch_size"], e["problem"]) for e in listed["entries"]] == [
        (second, 128, simulated_plan(110).batch_size, None), (first, 64, simulated_plan(100).batch_size, None),
        ("0" * 64, None, None, "unreadable (JSONDecodeError)")]
    assert listed["entries"][0]["key"]["model"] == {"name": "model1.yaml"}
    assert listed["entries"][0]["size_bytes"] == (plans / f"{second}.json").stat().st_size


def test_cache_clear_removes_one_by_prefix_or_all(plans: Path, capsys: pytest.CaptureFixture) -> None:
    digests = _stored(3)
    assert main(["cache", "clear", digests[0][:6]]) == 0
    assert capsys.readouterr().out == f"removed 1 plan from {plans}\n"
    assert not (plans / f"{digests[0]}.json").exists() and (plans / f"{digests[1]}.json").exists()
    assert main(["cache", "clear", digests[0][:6], "--json"]) == 0  # gone already: nothing removed, not an error
    assert json.loads(capsys.readouterr().out) == {"folder": str(plans), "removed": [], "prefix": digests[0][:6],
                                                  "kept_choices_removed": 0, "choices_folder": str(kept.choices_dir())}
    (plans / f".{digests[1]}.json.x1y2.partial").write_text("{")  # a writer killed mid-write left this
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 2 plans from {plans}\n"
    assert sorted(p.name for p in plans.iterdir()) == [".lock"]


def test_cache_clear_refuses_an_ambiguous_or_malformed_key(plans: Path) -> None:
    digests = _stored(2)
    common = next(i for i in range(64) if digests[0][i] != digests[1][i])
    if common:
        with pytest.raises(ConfigError, match=rf"^{digests[0][:common]}: 2 entries' keys start with it"):
            clear_plans(digests[0][:common])
    with pytest.raises(ConfigError, match=r"^3FA2: a key is hex digits"):
        clear_plans("3FA2")
    assert len(list(plans.glob("*.json"))) == 2


@pytest.mark.parametrize("argv, line", [
    (["cache"], "visionbatch cache: say list or clear: visionbatch cache list, or visionbatch cache clear [KEY]"),
    (["cache", "lst"], "visionbatch cache: lst is not list or clear (did you mean 'list'?): visionbatch cache list, "
                       "or visionbatch cache clear [KEY]"),
    (["cache", "list", "all"], "visionbatch cache: list takes nothing after it, not all: visionbatch cache list, or "
                               "visionbatch cache clear [KEY]"),
    (["cache", "clear", "zz"], "visionbatch cache: zz: a key is hex digits (0-9, a-f), as 'visionbatch "
                               "cache list' shows them"),
])
def test_cache_bad_input_is_one_line(plans: Path, capsys: pytest.CaptureFixture, argv: list[str], line: str) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not plans.exists()


# -- a real fit, reused ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_second_cpu_fit_of_the_shipped_dataset_is_reused(plans: Path, small_shapes: Path) -> None:
    """Two real fits against a CPU budget (8 of the shipped images, to keep it short): the second is the first's."""
    from visionbatch.fit.api import fit_batch

    first = fit_batch(small_shapes, imgsz=64, memory_budget="3GiB", max_probes=2, epochs=1)
    second = fit_batch(small_shapes, imgsz=64, memory_budget="3GiB", max_probes=2, epochs=1)
    assert first.reused is None and second.reused is not None and second.batch_size == first.batch_size
    assert dataclasses.replace(second, reused=None) == first  # the stored plan is the fitted one, exactly
    (entry,) = plans.glob("*.json")
    assert entry.stem == second.reused.key
    assert json.loads(entry.read_text())["key"]["device"]["budget_bytes"] == 3 * GIB
