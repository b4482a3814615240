"""infer keeps an earlier run's choice while this run's measurements carry it (`choice.keep_earlier`, `infer.kept`).

The speeds are BENCHMARKS' set 3 of issue 13 (cpu-2, 4 x 10 fps, imgsz 320, 500 ms): run 1 in a fast spell of
the machine, run 4 in a slow one, where the fresh rule moved from batch 1 to batch 2.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from visionbatch.infer import kept
from visionbatch.infer.choice import (
    KEEP_UTILISATION,
    busiest,
    choose,
    keep_earlier,
    simulate_policies,
)
from visionbatch.infer.plan import (
    BatchMeasurement,
    Constraints,
    EarlierChoice,
    StreamLoad,
)

LOAD = Constraints(latency_ms=500, load=StreamLoad(4, 10))
FAST = [(1, 82.0, 80.3, 83.7), (2, 90.5, 88.5, 92.5), (4, 93.6, 91.3, 96.1), (8, 93.1, 91.9, 94.5)]  # run 1
SLOW = [(1, 49.0, 47.9, 50.3), (2, 60.1, 58.5, 61.8), (4, 64.7, 63.0, 66.5), (8, 72.0, 69.5, 74.6)]  # run 4
SLOWER = [(1, 44.0, 43.0, 45.0), (2, 55.0, 54.0, 56.0), (4, 60.0, 59.0, 61.0), (8, 66.0, 65.0, 67.0)]
BATCH_1 = EarlierChoice(1, 0.0, "runs/infer/infer", "2026-11-30T15:00:00+00:00")
BATCH_2 = EarlierChoice(2, 25.0, "runs/infer/infer-2", "2026-11-30T15:05:00+00:00")


def sweep(rows: list[tuple[int, float, float, float]]) -> tuple[list[BatchMeasurement], dict[int, list[float]]]:
    ms = [BatchMeasurement(b, 50, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 * b / t, 1000 / t, t,
                           throughput_low_per_s=low, throughput_high_per_s=high) for b, t, low, high in rows]
    return ms, {m.batch_size: [m.latency_mean_ms] * 50 for m in ms}


def test_the_fresh_rule_flips_with_the_machine_and_the_kept_choice_does_not() -> None:
    fast, fast_service = sweep(FAST)
    slow, slow_service = sweep(SLOW)
    first = choose(fast, LOAD, service_ms=fast_service)
    alone = choose(slow, LOAD, service_ms=slow_service)
    assert (first.batch_size, first.queue_delay_ms) == (1, 0.0)
    assert (alone.batch_size, alone.queue_delay_ms) == (2, 25.0)  # batch 1 is past 70% busy at the low end
    # the slow run keeps the fast run's batch 1: 84% busy at the low end of its interval, within 85%
    again = keep_earlier(alone, BATCH_1, slow, LOAD, slow_service)
    assert (again.batch_size, again.queue_delay_ms) == (1, 0.0)
    busy = busiest(slow[0], again.simulated, slow)
    assert 0.70 < busy <= KEEP_UTILISATION and again.simulated.latency_p99_ms <= 500
    assert (again.earlier.alone_batch_size, again.earlier.alone_queue_delay_ms) == (2, 25.0)
    assert again.earlier.kept and again.earlier.why == (
        f"{busy:.0%} busy at the low end of its interval, within the 85% a kept choice may reach (a new one: 70%)")
    assert again.reason.startswith("batch 1: 49.0 img/s [95% 47.9-50.3], kept from an earlier run (batch 1 "
                                   "(queue delay 0 ms), chosen 2026-11-30T15:00:00+00:00 in runs/infer/infer): ")
    assert again.reason.endswith("This run alone would choose batch 2 (queue delay 25 ms, simulated p99 "
                                 f"{alone.simulated.latency_p99_ms:.1f} ms); keep_choice=False chooses afresh")
    # the replay tries the kept policy first, then the fresh choice's
    assert [(p.batch_size, p.queue_delay_ms) for p in again.candidates][:2] == [(1, 0.0), (2, 25.0)]
    assert next(v for v in again.verdicts if v.batch_size == 1).queue_delay_ms == 0.0
    # the other way round: a fast run keeps a slow run's batch 2 (46% busy): its p99 is higher than batch 1's,
    # but by less than a tenth of the 500 ms budget
    back = keep_earlier(first, BATCH_2, fast, LOAD, fast_service)
    kept_2 = next(p for p in simulate_policies(fast[1], LOAD, fast_service) if p.queue_delay_ms == 25.0)
    assert 0 < kept_2.latency_p99_ms - first.simulated.latency_p99_ms < 50
    assert (back.batch_size, back.queue_delay_ms, back.earlier.kept) == (2, 25.0, True)
    # a very slow spell's batch 4 with a 100 ms queue delay (set C of session 4) gives way in a fast run: its p99
    # is more than 50 ms above batch 1's
    slow_4 = keep_earlier(first, EarlierChoice(4, 100.0, "r", "t"), fast, LOAD, fast_service)
    kept_4 = next(p for p in simulate_policies(fast[2], LOAD, fast_service) if p.queue_delay_ms == 100.0)
    assert kept_4.latency_p99_ms - first.simulated.latency_p99_ms > 50
    assert slow_4.batch_size == 1 and slow_4.earlier.kept is False
    assert slow_4.earlier.why == (f"its simulated p99 is {kept_4.latency_p99_ms:.1f} ms, and batch 1, comfortably "
                                  f"idle, gives {first.simulated.latency_p99_ms:.1f}")


def test_an_earlier_choice_past_the_band_and_slower_gives_way_and_says_why() -> None:
    ms, service = sweep(SLOWER)
    fresh = choose(ms, LOAD, service_ms=service)
    assert fresh.batch_size == 4
    choice = keep_earlier(fresh, BATCH_1, ms, LOAD, service)
    assert (choice.batch_size, choice.queue_delay_ms) == (fresh.batch_size, fresh.queue_delay_ms)
    assert choice.earlier.kept is False
    assert choice.earlier.why.endswith("past the 85% a kept choice may reach, and it carries measurably less: "
                                       "44.0 img/s against 60.0")
    assert choice.reason == f"{fresh.reason}; an earlier run's choice ({BATCH_1.describe()}) no longer holds: " \
                            f"{choice.earlier.why}"
    assert choice.candidates == fresh.candidates


def test_an_earlier_choice_that_misses_a_constraint_or_was_not_measured_is_not_kept() -> None:
    ms, service = sweep(FAST)
    tight = Constraints(latency_ms=500, memory_budget_bytes=100, load=StreamLoad(4, 10))
    ms = [dataclasses.replace(m, memory_bytes=50 if m.batch_size == 1 else 200) for m in ms]
    fresh = choose(ms, tight, service_ms=service)
    assert fresh.batch_size == 1
    over = keep_earlier(fresh, BATCH_2, ms, tight, service)
    assert over.batch_size == 1 and over.earlier.kept is False and over.earlier.why.startswith("memory ")
    missing = keep_earlier(fresh, EarlierChoice(16, 0.0, "r", "t"), ms, tight, service)
    assert missing.batch_size == 1 and missing.earlier.why == "batch 16 was not measured in this run"
    nothing = Constraints(latency_ms=1, load=StreamLoad(4, 10))
    none = choose(ms, nothing, service_ms=service)
    assert none.batch_size is None
    assert keep_earlier(none, BATCH_1, ms, nothing, service).batch_size is None


def test_without_a_load_the_interval_rule_decides_what_is_kept() -> None:
    ms, _ = sweep(FAST)
    fresh = choose(ms, Constraints())
    assert fresh.batch_size == 2  # 4 and 8 overlap 2 within 3%
    kept_4 = keep_earlier(fresh, EarlierChoice(4, None, "r", "t"), ms, Constraints())
    assert kept_4.batch_size == 4 and kept_4.earlier.why == (
        "it carries 93.6 img/s against 90.5 for this run's own choice, batch 2: not measurably less")
    gone = keep_earlier(fresh, EarlierChoice(1, None, "r", "t"), ms, Constraints())
    assert gone.batch_size == 2 and gone.earlier.why == "it carries measurably less: 82.0 img/s against 90.5"


def key(**changes):
    base = dict(model_sha256="ab", model="m.onnx", backend="onnxruntime", provider="CPUExecutionProvider",
                precision="fp32", imgsz=320, end_to_end=False, device="cpu", device_name="AMD EPYC", threads=2,
                target=None, batch_sizes=(1, 2, 4), latency_ms=500, memory_budget_bytes=None, memory_fraction=None,
                streams=4, fps=10,
                software={"onnxruntime": "1.32.0", "visionbatch": "0.1"})
    return kept.choice_key(**{**base, **changes})


def test_a_choice_is_stored_whole_and_read_back_for_the_same_question_only() -> None:
    assert kept.load_choice(key()) is None
    path = kept.store_choice(key(), 2, 25.0, "runs/infer/infer-2", chosen_at="2026-11-30T15:05:00+00:00")
    assert path.parent == kept.choices_dir() and not [p for p in path.parent.iterdir() if ".tmp" in p.name]
    assert kept.load_choice(key()) == BATCH_2
    for change in ({"fps": 12}, {"streams": 5}, {"latency_ms": 400}, {"imgsz": 640}, {"model_sha256": "cd"},
                   {"threads": 1}, {"precision": "int8"}, {"memory_budget_bytes": 1 << 30}, {"streams": None},
                   {"memory_fraction": 0.5}, {"target": "t4"}, {"batch_sizes": (1, 2)}):
        assert kept.load_choice(key(**change)) is None, change
    kept.store_choice(key(), 1, 0.0, "runs/infer/infer-3")
    assert kept.load_choice(key()).batch_size == 1  # the latest choice replaces the entry


@pytest.mark.parametrize("text", [
    "{not json", "[]", '{"format": 2}', '{"format": 1, "key_hash": "wrong"}', "\x00\x01binary", "[" * 100_000,
    " " * (kept.MAX_ENTRY_BYTES + 1),
])
def test_an_entry_that_cannot_be_read_is_no_entry(text: str) -> None:
    path = kept.store_choice(key(), 2, 25.0, "r")
    path.write_text(text)
    assert kept.load_choice(key()) is None


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "folder"])
def test_an_entry_that_is_no_file_is_no_entry_and_is_not_read(kind: str) -> None:
    import os

    path = kept.store_choice(key(), 2, 25.0, "r")
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")  # reading it would never end
    assert kept.load_choice(key()) is None


def test_a_stored_queue_delay_this_load_does_not_try_is_not_kept() -> None:
    slow, service = sweep(SLOW)
    fresh = choose(slow, LOAD, service_ms=service)
    for delay in (1e300, 7.0):
        choice = keep_earlier(fresh, EarlierChoice(2, delay, "r", "2026-11-30T15:00:00+00:00"), slow, LOAD, service)
        assert choice.batch_size == fresh.batch_size and choice.queue_delay_ms == fresh.queue_delay_ms
        assert choice.earlier.kept is False and choice.earlier.why == (
            f"its queue delay of {delay:g} ms is not one this load's policies try")


@pytest.mark.parametrize("field,value", [
    ("batch_size", "2"), ("batch_size", 0), ("batch_size", 2.0), ("batch_size", True), ("queue_delay_ms", -1),
    ("queue_delay_ms", "25"), ("run_dir", 3), ("chosen_at", None),
])
def test_an_entry_with_a_wrong_type_is_no_entry(field: str, value) -> None:
    path = kept.store_choice(key(), 2, 25.0, "r")
    entry = json.loads(path.read_text())
    entry[field] = value
    path.write_text(json.dumps(entry))
    assert kept.load_choice(key()) is None


def test_a_rerun_of_infer_meets_the_earlier_choice_and_keep_choice_false_chooses_afresh(workdir, tmp_path_factory):
    import infer_models

    from visionbatch.infer.tune import tune_inference

    model = str(infer_models.tiny_onnx(tmp_path_factory))
    # a 64 px model at 2 img/s is a few percent busy on any CPU: every run's policy is comfortable
    args = dict(batch_sizes=[1, 2], runs=3, warmup_runs=1, streams=2, fps=1, latency_ms=1000)
    first = tune_inference(model, name="first", **args)
    assert first.earlier is None and first.batch_size is not None and first.remembered
    second = tune_inference(model, name="second", **args)
    assert second.earlier is not None and second.earlier.run_dir == first.run_dir
    assert (second.earlier.batch_size, second.earlier.queue_delay_ms) == (first.batch_size, first.queue_delay_ms)
    assert second.earlier.kept and second.batch_size == first.batch_size
    assert json.loads((workdir / second.run_dir / "plan.json").read_text())["earlier"]["kept"] is True
    other_load = tune_inference(model, name="other", **{**args, "fps": 2})
    assert other_load.earlier is None  # another question
    fresh = tune_inference(model, name="fresh", keep_choice=False, **args)
    assert fresh.earlier.kept is False and fresh.earlier.why == "keep_choice=False: chosen afresh"
    assert fresh.earlier.run_dir == first.run_dir  # a kept choice keeps the run and time that first made it
    assert (fresh.earlier.alone_batch_size, fresh.remembered) == (fresh.batch_size, True)
    assert tune_inference(model, name="after", **args).earlier.run_dir == fresh.run_dir  # remembered all the same


def test_the_cli_says_when_an_earlier_run_chose_the_same(capsys, workdir, tmp_path_factory):
    import infer_models

    from visionbatch.cli import main

    model = str(infer_models.tiny_onnx(tmp_path_factory))
    argv = ["infer", model, "batch_sizes=1", "runs=3", "warmup=1", "streams=2", "fps=1", "latency_ms=1000"]
    assert main([*argv, "name=a"]) == 0
    out = capsys.readouterr().out
    assert "an earlier run chose the same" not in out
    assert ("remembered: a later run with the same model, device, load and budgets keeps this choice while its own "
            "measurements carry it (keep_choice=False chooses afresh)") in out
    assert main([*argv, "name=b"]) == 0  # batch 1 is the only size: the same policy, whatever the timings
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("an earlier run chose the same: "))
    assert line.endswith("runs/infer/a")
    assert main([*argv, "name=c", "keep_choice=False"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("chosen afresh"))
    assert line.startswith("chosen afresh (keep_choice=False); an earlier run had chosen batch 1 (queue delay 0 ms)")
    assert line.endswith("runs/infer/a")  # the run that first chose it, though b kept it since


def test_a_kept_policy_whose_replay_missed_is_recorded_as_not_kept() -> None:
    from visionbatch.infer.replay import verify_choice

    slow, service = sweep(SLOW)
    choice = keep_earlier(choose(slow, LOAD, service_ms=service), BATCH_1, slow, LOAD, service)
    assert choice.earlier.kept and choice.candidates[0].batch_size == 1
    now = [0.0]

    def make_step(batch_size):  # a fake runner on a fake clock: single frames take 2 s, pairs 20 ms
        def step():
            now[0] += 2.0 if batch_size == 1 else 0.02
        return step

    def wait(seconds):
        now[0] += seconds

    replayed, replays = verify_choice(choice, slow, LOAD, make_step, clock=lambda: now[0], sleep=wait)
    assert replays[0].batch_size == 1 and not replays[0].met
    assert replayed.batch_size != 1 and replayed.earlier.kept is False
    assert replayed.earlier.why.endswith(", but its replay missed the budget")


def test_advice_when_the_queue_alone_is_over_the_budget_is_a_sane_factor() -> None:
    # the new-user trial: 4 x 10 fps on a device at 24-29 img/s gave "the work must shrink 90541000000.00x"
    from visionbatch.infer.choice import advise, judge_queued, simulate_policies
    ms, service = sweep([(1, 26.0, 25.0, 27.0), (2, 28.0, 27.0, 29.0)])
    load = Constraints(latency_ms=500, load=StreamLoad(4, 10))
    verdicts = [judge_queued(m, load, min(simulate_policies(m, load, service), key=lambda p: p.latency_p99_ms))
                for m in ms]
    advice = advise(ms, load, imgsz=320, verdicts=verdicts)
    factors = [float(a.split("must shrink ")[1].split("x")[0]) for a in advice if "must shrink" in a]
    assert factors == [1.43], advice  # 40 img/s needed / 28 measured: the queue's latency says nothing
