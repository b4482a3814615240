"""`visionbatch cache list | clear [KEY]`: the plan cache's entries, shown or removed."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from visionbatch.console import table
from visionbatch.errors import ConfigError
from visionbatch.fit.cache import ClearedPlans, PlanCache
from visionbatch.text import shown, suggest
from visionbatch.units import human_bytes

SUMMARY = "list or clear the fitted plans that train batch=auto and fit reuse (the plan cache)"
USAGE = """visionbatch cache list
visionbatch cache clear [KEY]

train batch=auto and fit store every batch plan they search for, and reuse it while nothing that
shapes memory has changed: the GPU (name, UUID, memory, driver, CUDA) or the CPU budget or the
target, torch, Ultralytics and visionbatch, the model file's content, task, imgsz, AMP, the label
density, the train arguments the step depends on, the dataset's images, memory_fraction and
max_probes. plan_cache=False fits again without reading or writing it.

list   shows each entry: its key, when it was fitted, the device, model, imgsz, batch and size
clear  removes every entry, or the one whose key starts with KEY (visionbatch cache clear 3fa2)

The entries live in $XDG_CACHE_HOME/visionbatch/plans (~/.cache/visionbatch/plans). infer's kept
choices (keep_choice=) live beside them in .../visionbatch/choices: list counts them, and clear
without a KEY removes them too."""

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
    from visionbatch.infer.kept import clear_choices, count_choices

    if action == "list":
        return dataclasses.replace(list_plans(), kept_choices=count_choices())
    cleared = clear_plans(rest[0] if rest else None)
    return cleared if rest else dataclasses.replace(cleared, kept_choices_removed=clear_choices())


def show(result: PlanCache | ClearedPlans) -> str:
    if isinstance(result, ClearedPlans):
        if result.prefix is not None and not result.removed:
            return f"no entry's key starts with {result.prefix} in {result.folder} (visionbatch cache list shows them)"
        count = len(result.removed)
        choices = result.kept_choices_removed
        kept = f", and {choices} kept inference choice{'' if choices == 1 else 's'}" if choices else ""
        return f"removed {count} plan{'' if count == 1 else 's'} from {result.folder}{kept}"
    kept = (f"infer keeps {result.kept_choices} choice{'' if result.kept_choices == 1 else 's'} for later runs "
            f"(keep_choice=); visionbatch cache clear removes them too") if result.kept_choices else ""
    if not result.entries:
        return f"no plans cached in {result.folder}" + (f"\n{kept}" if kept else "")
    rows = []
    for entry in result.entries:
        when = entry.fitted_at[:16].replace("T", " ") if entry.fitted_at else "-"
        rows.append([entry.key_hash[:12], when, entry.device or "-", entry.model or "-",
                     entry.imgsz if entry.imgsz is not None else "-",
                     entry.batch_size if entry.batch_size is not None and entry.problem is None else "-",
                     human_bytes(entry.size_bytes)])
    lines = ["", table(["key", "fitted (UTC)", "device", "model", "imgsz", "batch", "size"], rows,
                       title=f"visionbatch cache: {len(result.entries)} plans in {result.folder}"), ""]
    lines += [f"{entry.key_hash[:12]}: unusable ({entry.problem}); the next fit of its key replaces it"
              for entry in result.entries if entry.problem is not None]
    lines.append("remove one: visionbatch cache clear KEY; all: visionbatch cache clear")
    if kept:
        lines.append(kept)
    return "\n".join(lines)
