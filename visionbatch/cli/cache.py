"""`visionbatch cache list | clear [KEY]`: the plan cache's entries and infer's kept choices, shown or removed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from visionbatch.console import table
from visionbatch.errors import ConfigError
from visionbatch.fit.cache import ClearedPlans, PlanCache
from visionbatch.results import minutes
from visionbatch.text import printable, shown, suggest
from visionbatch.units import human_bytes

SUMMARY = "list or clear the fitted plans that train batch=auto and fit reuse, and infer's kept choices"
USAGE = """visionbatch cache list
visionbatch cache clear [KEY]

train batch=auto and fit store every batch plan they search for, and reuse it while nothing that
shapes memory has changed: the GPU (name, UUID, memory, driver, CUDA) or the CPU budget or the
target, torch, Ultralytics and visionbatch, the model file's content, task, imgsz, AMP, the label
density, the train arguments the step depends on, the dataset's images, memory_fraction and
max_probes. plan_cache=False fits again without reading or writing it. infer keeps the policy it
chose for the same question (model, runner, device, budgets, load) for later runs (keep_choice=).

list   shows each plan: its key, when it was fitted, the device, model, imgsz, batch and size;
       then each kept choice: its key, when it was first chosen, the model, runner/precision,
       imgsz, load (streams x fps), batch, queue delay and size
clear  removes every plan and kept choice, or the one plan or kept choice whose key starts with
       KEY (visionbatch cache clear 3fa2); a KEY that starts two entries removes nothing

The plans live in $XDG_CACHE_HOME/visionbatch/plans (~/.cache/visionbatch/plans), the kept choices
beside them in .../visionbatch/choices."""

ACTIONS = ("list", "clear")
EXAMPLE = "visionbatch cache list, or visionbatch cache clear [KEY]"


def run(tokens: Sequence[str]) -> PlanCache | ClearedPlans:
    from visionbatch.fit.cache import clear_plans, list_plans

    if not tokens:
        raise ConfigError(f"say list or clear: {EXAMPLE}")
    action, rest = tokens[0], list(tokens[1:])
    if action not in ACTIONS:
        raise ConfigError(f"{shown(action)} is not list or clear{suggest(action, ACTIONS)}: {EXAMPLE}")
    if (action == "list" and rest) or len(rest) > 1:
        raise ConfigError(f"{action} takes {'nothing' if action == 'list' else 'one KEY'} after it, not "
                          f"{shown(' '.join(rest))}: {EXAMPLE}")
    from visionbatch.files import cache_entries_starting
    from visionbatch.fit.cache import plans_dir
    from visionbatch.infer.kept import choices_dir, clear_choices, list_choices

    folder = str(choices_dir())
    if action == "list":
        choices = list_choices()
        return dataclasses.replace(list_plans(), kept_choices=len(choices), choices=choices, choices_folder=folder)
    prefix = rest[0] if rest else None
    if prefix is not None:  # one entry in both folders, as in one: a KEY that starts two removes nothing
        plan, choice = cache_entries_starting(plans_dir(), prefix), cache_entries_starting(choices_dir(), prefix)
        if plan and choice:
            raise ConfigError(f"{prefix}: a plan's key ({plan[0].stem[:12]}) and a kept choice's "
                              f"({choice[0].stem[:12]}) start with it: give more of the key")
    cleared = clear_plans(prefix)
    return dataclasses.replace(cleared, kept_choices_removed=len(clear_choices(prefix)), choices_folder=folder)


def show(result: PlanCache | ClearedPlans) -> str:
    if isinstance(result, ClearedPlans):
        return _cleared(result)
    lines = _plans(result) if result.entries else [f"no plans cached in {result.folder}"]
    if result.choices:
        lines += _choices(result)[1 if lines[-1] == "" else 0:]  # one blank line between the tables
    if result.entries or result.choices:
        lines.append("remove one (a plan or a kept choice): visionbatch cache clear KEY; all: visionbatch cache clear")
    return "\n".join(lines)


def _cleared(result: ClearedPlans) -> str:
    plans, choices = len(result.removed), result.kept_choices_removed
    if result.prefix is not None and not plans and not choices:
        return (f"no plan's or kept choice's key starts with {result.prefix} in {result.folder} or "
                f"{result.choices_folder} (visionbatch cache list shows them)")
    parts = []
    if plans or result.prefix is None:
        parts.append(f"{plans} plan{'' if plans == 1 else 's'} from {result.folder}")
    if choices:
        parts.append(f"{choices} kept inference choice{'' if choices == 1 else 's'} from {result.choices_folder}")
    return "removed " + ", and ".join(parts)


def _plans(result: PlanCache) -> list[str]:
    rows = []
    for entry in result.entries:
        rows.append([entry.key_hash[:12], minutes(entry.fitted_at), printable(entry.device or "-", 60),
                     printable(entry.model or "-", 60), entry.imgsz if type(entry.imgsz) is int else "-",
                     entry.batch_size if entry.batch_size is not None and entry.problem is None else "-",
                     human_bytes(entry.size_bytes)])
    lines = ["", table(["key", "fitted (UTC)", "device", "model", "imgsz", "batch", "size"], rows,
                       title=f"visionbatch cache: {len(result.entries)} plans in {result.folder}"), ""]
    lines += [f"{entry.key_hash[:12]}: unusable ({entry.problem}); the next fit of its key replaces it"
              for entry in result.entries if entry.problem is not None]
    return lines


def _choices(result: PlanCache) -> list[str]:
    """The kept choices' table; their text is already printable (`infer.kept.KeptChoice`)."""
    rows = [[c.key_hash[:12], minutes(c.chosen_at), c.model or "-", c.runner or "-",
             c.imgsz if c.imgsz is not None else "-", c.load or "-",
             c.batch_size if c.batch_size is not None else "-",
             f"{c.queue_delay_ms:g}" if c.queue_delay_ms is not None else "-", human_bytes(c.size_bytes)]
            for c in result.choices]
    count = len(result.choices)
    lines = ["", table(["key", "chosen (UTC)", "model", "runner", "imgsz", "load", "batch", "queue delay ms", "size"],
                       rows, title=f"infer's kept choices (keep_choice=): {count} in {result.choices_folder}"), ""]
    lines += [f"{c.key_hash[:12]}: unusable ({c.problem}); the next infer of its question replaces it"
              for c in result.choices if c.problem is not None]
    return lines

