"""tools/gpu_check.py's outputs: results.json, report.md (tables for BENCHMARKS.md) and calibration.json.

Everything is read back from the state (every finished unit, this run's and earlier runs'), so a
resumed run reports the whole of what was measured.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

GIB, MIB = 1 << 30, 1 << 20


def bracket(trials: list[dict], card_gib: int) -> tuple[int, int | None]:
    """(largest batch known to fit, smallest known not to) on a card, from trials on any card.

    A batch that fitted a card fits a larger one, and any smaller batch; one that ran out of
    memory does so on a smaller card, and at any larger batch.

    Examples:
        >>> trials = [{"card_gib": 8, "batch": 20, "oom": False}, {"card_gib": 8, "batch": 30, "oom": True},
        ...           {"card_gib": 16, "batch": 40, "oom": True}, {"card_gib": 4, "batch": 12, "oom": False}]
        >>> bracket(trials, 8), bracket(trials, 16), bracket(trials, 4), bracket(trials, 24)
        ((20, 30), (20, 40), (12, 30), (20, None))
    """
    low = max((t["batch"] for t in trials if not t["oom"] and t["card_gib"] <= card_gib), default=0)
    high = min((t["batch"] for t in trials if t["oom"] and t["card_gib"] >= card_gib), default=None)
    return low, high


def case_key(case: tuple) -> str:
    model, task, imgsz, card_gib = case
    return f"{model}-{task}-{imgsz}-{card_gib}GiB"


def trials_of(units: dict[str, dict], case: tuple) -> list[dict]:
    """Every finished trial of the case's model, task and size, on any card.

    Examples:
        >>> units = {"B/trial/yolo11n-detect-640-8GiB/b20": {"result": {"oom": False}},
        ...          "B/trial/yolo11n-detect-640-4GiB/b20": {"result": {"oom": True}},
        ...          "B/trial/yolo11s-detect-640-8GiB/b9": {"result": {"oom": False}}}
        >>> [(t["card_gib"], t["batch"], t["oom"]) for t in trials_of(units, ("yolo11n", "detect", 640, 16))]
        [(8, 20, False), (4, 20, True)]
    """
    model, task, imgsz, _ = case
    out = []
    for key, record in units.items():
        parts = key.split("/")
        if parts[:2] == ["B", "trial"] and record.get("result"):
            m, t, size, card = parts[2].rsplit("-", 3)
            if (m, t, int(size)) == (model, task, imgsz):
                out.append({"card_gib": int(card[:-3]), "batch": int(parts[3][1:]), "oom": record["result"]["oom"],
                            "result": record["result"], "key": key})
    return out


def trial_peaks(result: dict, context_bytes: int) -> dict[str, int | None]:
    """A trial's peaks over its epochs: reserved in training and validation, and with the context.

    Examples:
        >>> epochs = [{"train": {"reserved": 5}, "val": {"reserved": 3}}, {"train": {"reserved": 6}, "val": {"reserved": 7}}]
        >>> trial_peaks({"epochs": epochs}, 10)
        {'train_reserved': 6, 'val_reserved': 7, 'reserved': 7, 'device': 17}
    """
    train = max((e["train"]["reserved"] for e in result.get("epochs", []) if "train" in e), default=None)
    val = max((e["val"]["reserved"] for e in result.get("epochs", []) if "val" in e), default=None)
    peak = max((v for v in (train, val) if v is not None), default=None)
    return {"train_reserved": train, "val_reserved": val, "reserved": peak,
            "device": None if peak is None else peak + context_bytes}


def gib(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value / GIB:.{digits}f}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def ratio(predicted: float | None, measured: float | None) -> str:
    return "-" if not predicted or not measured else f"{predicted / measured:.3f}"


def error(predicted: float | None, measured: float | None) -> str:
    return "-" if predicted is None or not measured else f"{(predicted - measured) / measured:+.1%}"


def table(header: list[str], rows: list[list[Any]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def collect(units: dict[str, dict], hello: dict, settings: Any, calibration: dict | None, cases: tuple) -> dict:
    """The run's results as one JSON-able dict (see report.md for the meaning of each figure)."""
    context = int(hello["device"]["context_bytes"])
    constants = (units.get("A/constants") or {}).get("result")
    points = []
    for key, record in units.items():
        if key.startswith("A/points/") and record.get("result"):
            name = key.split("/")[2]
            traced = {(r["phase"], r["batch"]): r["allocated"]
                      for r in ((units.get(f"A/trace/{name}") or {}).get("result") or {}).get("rows", [])}
            for row in record["result"]["rows"]:
                predicted = None
                if calibration and (row["phase"], row["batch"]) in traced:
                    allocated = traced[(row["phase"], row["batch"])]
                    predicted = (allocated * calibration["reserved_over_allocated"]
                                 + calibration["reserved_extra_bytes"] + calibration["workspace_bytes"])
                points.append({"config": name, **row, "traced_allocated": traced.get((row["phase"], row["batch"])),
                               "predicted_reserved": predicted})
    rows = [case_results(units, case, hello, context) for case in cases]
    epochs = next((r.get("result") for k, r in units.items() if k.startswith("C/epochs/")), None)
    recovery = next((r.get("result") for k, r in units.items() if k.startswith("D/oom/")), None)
    plan_cache = next((r.get("result") for k, r in units.items() if k.startswith("D/cache/")), None)
    errors = [{"key": k, "status": r["status"], "error": r.get("error")} for k, r in units.items()
              if r.get("status") != "done"]
    return {"device": hello["device"], "packages": hello.get("packages", {}),
            "date": datetime.date.today().isoformat(), "data": settings.data,
            "simulated": settings.simulate, "fraction": settings.fraction, "train_images": hello["train_images"],
            "constants": constants, "calibration": calibration, "points": points,
            "cases": [r for r in rows if r is not None], "epochs": epochs, "recovery": recovery,
            "plan_cache": plan_cache, "errors": errors}


def case_results(units: dict[str, dict], case: tuple, hello: dict, context: int) -> dict | None:
    key = case_key(case)
    plans = {name: (units.get(f"B/{name}/{key}") or {}).get("result") for name in ("fit", "autobatch", "predict")}
    if plans["autobatch"]:  # its time is the unit's: the model's build and the profile
        plans["autobatch"] = {**plans["autobatch"], "planning_s": units[f"B/autobatch/{key}"].get("seconds")}
    trials = [t for t in trials_of(units, case) if t["card_gib"] == case[3]]
    if not any(plans.values()) and not trials:
        return None
    low, high = bracket(trials_of(units, case), case[3])
    cap = int(hello.get("batch_cap", hello["train_images"]))
    exact = low >= cap or (high is not None and high - low <= 1)
    rows = []
    for t in sorted(trials, key=lambda t: t["batch"]):
        check = (units.get(f"B/check/{key}/b{t['batch']}") or {}).get("result")
        predicted = None
        if check and check.get("val_reserved_bytes") is not None:
            predicted = max(check["train_reserved_bytes"], check["val_reserved_bytes"])
        rows.append({"batch": t["batch"], "oom": t["oom"], "oom_phase": t["result"].get("oom_phase"),
                     "oom_epoch": t["result"].get("oom_epoch"), **trial_peaks(t["result"], context),
                     "nvml_peak_bytes": t["result"].get("nvml_peak_bytes"), "predicted_reserved": predicted,
                     "seconds": (units.get(t["key"]) or {}).get("seconds")})
    model, task, imgsz, card_gib = case
    return {"case": key, "model": model, "task": task, "imgsz": imgsz, "card_gib": card_gib, **plans,
            "true_max": {"low": low, "high": high, "exact": exact}, "trials": rows}


def oom_text(row: dict, batch: int) -> str:
    """Did training at `batch` run out of memory: from its trial, else from the bracket."""
    trial = next((t for t in row["trials"] if t["batch"] == batch), None)
    if trial is not None:
        return f"yes ({trial['oom_phase']}, epoch {trial['oom_epoch']})" if trial["oom"] else "no"
    low, high = row["true_max"]["low"], row["true_max"]["high"]
    if batch <= low:
        return "no (inferred)"
    return "yes (inferred)" if high is not None and batch >= high else "?"


def render(results: dict, phases: dict, counts: dict) -> str:
    device = results["device"]
    lines = [f"# GPU check: {device['name']} ({results['date']})", ""]
    if results["simulated"]:
        lines += ["**SIMULATED: a memory law on a CPU, not a measurement. These numbers exercise the script; "
                  "never record them.**", ""]
    lines += [f"Driver {device.get('driver')}, torch {device.get('torch')}, CUDA {device.get('cuda')}, compute "
              f"capability {device.get('capability')} ({device.get('arch')}); data {results['data']} "
              f"({results['train_images']} training images); memory fraction {results['fraction']} for AutoBatch "
              f"and fit. This run: {counts['run']} units run, {counts['reused']} reused from earlier runs, "
              f"{counts['failed']} failed, {counts['timeout']} over their limit, {counts['cut']} cut at a bound.", "",
              "Packages: " + ", ".join(f"{k} {v}" for k, v in results.get("packages", {}).items()), ""]
    for name, phase in phases.items():
        skipped = len(phase["skipped"])
        lines.append(f"- Phase {name}: {phase['used_s']} s of {phase['bound_s']:g} s"
                     + (f"; **stopped at its time bound: {skipped} units not run** (a rerun with the same --out "
                        f"continues)" if skipped else ""))
    lines += [""] + constants_section(results) + cases_section(results) + epochs_section(results)
    lines += recovery_section(results) + plan_cache_section(results)
    if results["errors"]:
        lines += ["## Units that failed", ""] + [f"- `{e['key']}`: {e['status']}: {e['error']}"
                                                 for e in results["errors"]] + [""]
    return "\n".join(lines) + "\n"


def constants_section(results: dict) -> list[str]:
    constants, calibration = results["constants"], results["calibration"]
    if not constants:
        return ["## CUDA constants (Phase A)", "", "Not measured yet.", ""]
    segments = ", ".join(f"{mib(v)}" for v in constants["segments"].values())
    fitted = (f"{calibration['reserved_over_allocated']} x allocated + {mib(calibration['reserved_extra_bytes'])} MiB"
              if calibration else "not fitted (fewer than two steps ran)")
    lines = ["## CUDA constants (Phase A)", ""] + table(["constant", "value"], [
        ["allocation rounding (bytes)", constants["round_bytes"]],
        ["reserved for a 1 B, 5 MiB and 50 MiB + 1 B tensor (MiB)", segments],
        ["reserved at a step's peak", fitted],
        ["cuBLAS workspace (MiB)", mib(constants["cublas_workspace_bytes"])],
        ["cuDNN workspace, largest transient of a 3x3 64-channel conv (MiB)", mib(constants["cudnn_workspace_bytes"])],
        ["CUDA context at init / with cuBLAS and cuDNN loaded (MiB, NVML)",
         f"{mib(constants['context_init_bytes'])} / {mib(constants['context_bytes'])}"],
    ], "lr") + [""]
    if results["points"]:
        lines += ["The CPU trace against the real step (allocated: tensors; reserved predicted from the trace with "
                  "the constants above):", ""]
        lines += table(["config", "phase", "batch", "measured allocated MiB", "traced allocated MiB", "error",
                        "measured reserved MiB", "predicted reserved MiB", "error"],
                       [[p["config"], p["phase"], p["batch"], mib(p["allocated"]), mib(p["traced_allocated"]),
                         error(p["traced_allocated"], p["allocated"]), mib(p["reserved"]),
                         mib(p["predicted_reserved"]), error(p["predicted_reserved"], p["reserved"])]
                        for p in results["points"] if p.get("ok")], "lllrrrrrrr") + [""]
    return lines


def cases_section(results: dict) -> list[str]:
    lines = ["## Smaller cards emulated (Phase B)", "",
             "Predicted against measured peaks: AutoBatch's figure is its proxy step's reserved memory, set against "
             "the trial's peak reserved; visionbatch's (fit measured, and the CPU-trace prediction for an H200 "
             "leaving the card's memory to training) is the device total, peak reserved + CUDA context, set against "
             "the trial's peak reserved + the context. A trial is real Ultralytics training at that batch: a mosaic "
             "epoch and a close_mosaic epoch, each validated at 2x the batch. True max: the largest batch whose "
             "trial ran without running out of memory (a batch below one that fitted counts as fitting).", ""]
    rows = []
    for row in results["cases"]:
        true = row["true_max"]
        true_text = str(true["low"]) if true["exact"] else "-" if not (true["low"] or true["high"]) else (
            f">= {true['low']}" + (f" (< {true['high']})" if true["high"] else ""))
        for planner in ("autobatch", "fit", "predict"):
            plan = row.get(planner)
            if not plan:
                continue
            batch = plan["batch"]
            trial = next((t for t in row["trials"] if t["batch"] == batch), None)
            if planner == "autobatch":
                predicted, measured = plan.get("predicted_reserved_bytes"), trial and trial["reserved"]
            else:
                predicted = max((v for v in (plan["predicted_bytes"], plan.get("val_predicted_bytes")) if v),
                                default=None)
                measured = trial and trial["device"]
            share = f"{batch / true['low']:.2f}" if true["low"] and batch else "-"
            rows.append([row["model"], row["task"], row["imgsz"], row["card_gib"], planner, batch, true_text, share,
                         gib(predicted), gib(measured), ratio(predicted, measured),
                         oom_text(row, batch) if batch else "none fits",
                         plan.get("planning_s", "-")])
    lines += table(["model", "task", "imgsz", "card GiB", "planner", "batch", "true max", "batch / true max",
                    "predicted GiB", "measured GiB", "predicted / measured", "OOM", "planning s"], rows,
                   "lllrlrrrrrrlr") + [""]
    trials = [[row["case"], t["batch"], "OOM (" + f"{t['oom_phase']}, epoch {t['oom_epoch']})" if t["oom"] else "ok",
               gib(t["train_reserved"]), gib(t["val_reserved"]), gib(t["device"]), gib(t["nvml_peak_bytes"]),
               gib(t["predicted_reserved"]), "-" if t["oom"] else error(t["predicted_reserved"], t["reserved"]),
               t["seconds"]]
              for row in results["cases"] for t in row["trials"]]
    if trials:
        lines += ["Every trial (reserved without the context, as Ultralytics' GPU_mem; the prediction is the "
                  "fixed-batch API's, `fit_batch(..., batch_size=b)`, max of training and validation):", ""]
        lines += table(["case", "batch", "result", "train peak reserved GiB", "val peak reserved GiB",
                        "device peak GiB", "NVML peak GiB", "predicted reserved GiB", "error", "s"], trials,
                       "lrlrrrrrrr") + [""]
    return lines


def epochs_section(results: dict) -> list[str]:
    epochs = results["epochs"]
    lines = ["## Reserved memory across epochs (Phase C)", ""]
    if not epochs:
        return lines + ["Not measured yet.", ""]
    records = epochs.get("epochs", [])
    lines += table(["epoch", "mosaic", "train peak reserved GiB", "reserved at the epoch's end GiB (GPU_mem)",
                    "val peak reserved GiB", "train peak allocated GiB"],
                   [[e["epoch"], "on" if e["mosaic"] else "off", gib(e["train"]["reserved"]), gib(e["reserved_end"]),
                     gib(e.get("val", {}).get("reserved")), gib(e["train"]["allocated"])]
                    for e in records if "train" in e], "rlrrrr") + [""]
    if len(records) >= 2 and "train" in records[-1]:
        first, last = records[0]["train"]["reserved"], records[-1]["train"]["reserved"]
        lines += [f"Peak reserved in training, epoch 1 to {records[-1]['epoch']}: {error(last, first)}"
                  + (f"; the run ran out of memory ({epochs.get('oom_phase')}, epoch {epochs.get('oom_epoch')})"
                     if epochs.get("oom") else "") + ".", ""]
    return lines


def recovery_section(results: dict) -> list[str]:
    """Phase D's out-of-memory recovery: the run, each recovery, each epoch, and torch's messages."""
    run = results.get("recovery")
    lines = ["## Out-of-memory recovery on the device (Phase D)", ""]
    if not run:
        return lines + ["Not measured yet.", ""]
    if run["simulated"]:
        lines += ["SIMULATED: real Ultralytics training on the CPU at imgsz "
                  f"{run['trained_imgsz']}, with the simulated device's law as the card and torch's message wording.",
                  ""]
    outcome = "completed" if run["completed"] else f"did not complete ({run['error'] or run['status']})"
    lines += [f"`visionbatch train` ({run['model']}, imgsz {run['imgsz']}, {run['epochs_asked']} epochs, close_mosaic "
              f"{run['close_mosaic']}) at batch {run['batch']}. At epoch 2's start the process's memory was capped at "
              f"{gib(run['cap_bytes'])} GiB reserved: the {gib(run['fixed_reserved_bytes'])} GiB held between steps, plus "
              f"{run['cap_share']:.0%} of the rest of the {gib(run['epoch1_peak_reserved_bytes'])} GiB epoch 1's step "
              f"reserved at batch {run['epoch1_batch']}. The run {outcome}; effective batch {run['effective_batch']}, "
              + ("kept in every epoch." if run["effective_kept"] else "**not kept in every epoch**."), ""]
    lines += table(["epoch", "mosaic", "batch", "accumulate", "batch x accumulate", "peak reserved GiB"],
                   [[e["epoch"], "on" if e["mosaic"] else "off", e["batch"], e["accumulate"],
                     e["batch"] * e["accumulate"] if e["batch"] and e["accumulate"] else "-",
                     gib(e["peak_reserved_bytes"])] for e in run["epochs"]], "rlrrrr") + [""]
    if run["recoveries"]:
        # the step that failed at the starting batch had run in epoch 1: its peak there is the true need
        measured = (run["epoch1_peak_reserved_bytes"] + run["context_bytes"]
                    if run["epoch1_peak_reserved_bytes"] is not None else None)
        lines += ["Each recovery. Needed: what the recovery read from torch's message (in use + the failed "
                  "allocation, the CUDA context included); against epoch 1's peak reserved + the context at the "
                  "same batch.", ""]
        lines += table(["phase", "epoch", "step", "batch", "accumulate", "effective batch", "needed GiB",
                        "epoch 1 peak + context GiB", "needed / that", "resumed from"],
                       [[r["phase"], r["epoch"], "-" if r["iteration"] is None else r["iteration"] + 1,
                         f"{r['old_batch']} -> {r['new_batch']}",
                         f"{r['old_accumulate']} -> {r['new_accumulate']}" if r["new_accumulate"] else "-",
                         r["effective_batch"] or "-", gib(r["peak_bytes"]),
                         gib(measured) if r["old_batch"] == run["epoch1_batch"] else "-",
                         ratio(r["peak_bytes"], measured) if r["old_batch"] == run["epoch1_batch"] else "-",
                         r["resumed_from"]] for r in run["recoveries"]], "lrrllrrrrl") + [""]
    if run["oom_readings"]:
        lines += ["torch's out-of-memory messages, as read (the total is the whole card's; the cap shows only as "
                  "'allowed'):", ""]
        lines += table(["tried MiB", "in use GiB", "reserved GiB", "free GiB", "total GiB", "allowed GiB"],
                       [[mib(m["tried_bytes"]), gib(m["in_use_bytes"]), gib(m["reserved_bytes"]),
                         gib(m["free_bytes"]), gib(m["total_bytes"]), gib(m["allowed_bytes"])]
                        for m in run["oom_readings"]], "rrrrrr") + [""]
    return lines + [f"Training took {run['train_s']} s, recoveries included.", ""]


def plan_cache_section(results: dict) -> list[str]:
    """Phase D's plan cache: the key's device part, whether it is stable, and the second fit's reuse."""
    cache = results.get("plan_cache")
    lines = ["## The plan cache on the device (Phase D)", ""]
    if not cache:
        return lines + ["Not measured yet.", ""]
    if cache["simulated"]:
        lines += ["SIMULATED: the key names a CPU budget, and the fit is the simulated device's planner.", ""]
    stable = "the same both times" if cache["key_stable"] else f"**different** ({', '.join(k[:12] for k in cache['keys'])})"
    lines += [f"The key for {cache['device']}, built twice: {stable} (key {cache['keys'][0][:12]}). Its device part:", ""]
    lines += table(["field", "value"], [[name, gib(value) + " GiB" if name.endswith("_bytes") and value else value]
                                        for name, value in cache["device_key"].items()], "ll") + [""]
    parts = cache["key_parts"]
    lines += [f"With: {', '.join(f'{k} {v}' for k, v in parts['software'].items())}; model {parts['model_sha256']}, "
              f"task {parts['task']}, imgsz {parts['imgsz']}, AMP {parts['amp']}.", ""]
    lines += table(["fit", "batch", "plan", "planning s", "call s"],
                   [[n + 1, f["batch"], f["reused"] or "fitted", f["planning_s"], f["call_s"]]
                    for n, f in enumerate(cache["fits"])], "rrlrr") + [""]
    verdict = "reused, same batch, same key" if cache["reused"] else "**not reused as expected**"
    return lines + [f"The second fit: {verdict}. Entries in the cache folder: {cache['entries']}.", ""]


def write_outputs(out: Path, state: dict, hello: dict, settings: Any, calibration: dict | None, phases: dict,
                  counts: dict, cases: tuple) -> list[Path]:
    from visionbatch.files import atomic_write_text

    results = collect(state["units"], hello, settings, calibration, cases)
    results["phases"], results["counts"] = phases, counts
    written = [atomic_write_text(out / "results.json", json.dumps(results, indent=1)),
               atomic_write_text(out / "report.md", render(results, phases, counts))]
    if calibration:
        written.append(atomic_write_text(out / "calibration.json", json.dumps(calibration, indent=2) + "\n"))
    return written
