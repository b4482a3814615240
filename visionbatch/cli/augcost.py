"""`visionbatch augcost DATA.yaml [key=value ...]`."""

from __future__ import annotations

from collections.abc import Sequence

from visionbatch.augment.report import AugmentationReport, PhaseProfile
from visionbatch.cli.args import positional
from visionbatch.console import fmt, table
from visionbatch.keys import help_block, read_keys

SMALL_MS = 0.01  # rows cheaper than this in every phase are listed on one line

SUMMARY = "cost each augmentation, resolution and loader setting, and say if data starves training"
USAGE = """visionbatch augcost DATA.yaml [key=value ...]

Times every transform of Ultralytics' real training pipeline for your data and arguments (image
load, Mosaic, CopyPaste, RandomPerspective, MixUp, CutMix, Albumentations and each transform in
it, RandomHSV, the flips, Format, collation; LetterBox in validation), with mosaic and after
close_mosaic, at several image sizes; the real DataLoader's images/s against workers and cache;
the training step's images/s; and which side is the bottleneck. Your dataset folder is never
written (measurements run on a symlinked sample in a temporary folder).

Ultralytics train arguments keep their meaning: imgsz (the training size), batch (a batch size:
augcost profiles a fixed batch), task, model, device, epochs, close_mosaic, mosaic, mixup,
copy_paste, cutmix, cache, workers, fraction, ...
Output: runs/augcost/<name>/ with augcost.json and augcost.png.

visionbatch keys:
""" + help_block("augcost")


def run(tokens: Sequence[str]) -> AugmentationReport:
    from visionbatch.augment import profile_augmentation, save_report
    from visionbatch.ultralytics.args import ultralytics_defaults

    data, pairs = positional(tokens, "augcost", "DATA", "data",
                             "visionbatch augcost path/to/data.yaml [key=value ...]")
    pairs = read_keys("augcost", pairs, ultralytics_defaults())  # seed= too, which check_train_args never sees
    name, project = pairs.get("name"), pairs.get("project")
    report = profile_augmentation(data, **pairs)
    return save_report(report, name=name, project=project)  # the library makes the run folder


def show(report: AugmentationReport) -> str:
    lines = ["", _cost_table(report)]
    val = report.phase("val")
    if val is not None:
        lines += ["", _phase_table(val, f"validation chain at imgsz {val.imgsz} (batch {report.batch_size * 2})")]
    if report.pipeline_delta:
        lines += ["", "your pipeline against Ultralytics' default Albumentations transforms: " + "; ".join(
            f"{d.phase} {d.pipeline_ms:.2f} vs {d.default_ms:.2f} ms/img ({d.added_ms:+.2f} ms, "
            f"{d.added_share:+.0%}; 95% interval {d.added_low_ms:+.2f} to {d.added_high_ms:+.2f} ms"
            f"{'' if d.measured else ': not measurably different, time more images= to tell'})"
            for d in report.pipeline_delta)]
    if len(report.sizes) > 1:
        lines += ["", _resolution_table(report)]
    if report.loader:
        lines += ["", _loader_table(report)]
    if report.step is not None:
        s = report.step
        how = (f"given (step_img_per_s={s.images_per_s:g})" if s.source == "given" else
               f"timed on {s.device}, batch {s.measured_batch_size}{', AMP' if s.amp else ''}")
        lines += ["", f"training step: {s.images_per_s:.1f} img/s ({s.model}, {how})"]
    if report.verdict is not None:
        lines.append(f"verdict: {report.verdict.message}")
    lines += [f"note: {note}" for note in report.notes]
    lines.append(f"{report.wall_s:.0f} s; run folder: {report.save_dir}  (augcost.json, augcost.png)")
    return "\n".join(lines)


def _cost_table(report: AugmentationReport) -> str:
    phases = [p for p in (report.phase("mosaic"), report.phase("close_mosaic")) if p is not None]
    names = [t.name for t in phases[0].transforms]
    for other in phases[1:]:
        names += [t.name for t in other.transforms if t.name not in names]
    headers = ["transform"]
    for p in phases:
        headers += [f"{p.phase} ms", "p95", "share", "calls"]
    rows, small = [], []
    for name in names:
        if all((p.cost(name).mean_ms if p.cost(name) else 0.0) < SMALL_MS for p in phases):
            small.append(name)
            continue
        row: list = [name]
        for p in phases:
            cost = p.cost(name)
            row += [cost.mean_ms, cost.p95_ms, f"{cost.share:.1%}", f"{cost.calls_per_image:g}"] if cost else ["-"] * 4
        rows.append(row)
    rows.append(["total per image"] + sum(([p.total_ms, p.total_p95_ms, "100%", ""] for p in phases), []))
    rows.append(["untimed __getitem__"] + sum(([p.unprofiled_ms, "", f"{p.overhead:+.1%}", ""] for p in phases), []))
    chain = f", pipeline={report.pipeline}" if report.pipeline else ""
    epochs = ", ".join(f"{p.phase} {p.epochs} epoch{'s' if p.epochs != 1 else ''}" for p in phases)
    title = (f"visionbatch augcost: {report.task} on {report.data}, imgsz {report.imgsz}, batch {report.batch_size}"
             f"{chain}\nper image over {phases[0].images} images ({epochs}); most expensive first")
    text = table(headers, [[_cell(v) for v in row] for row in rows], title=title)
    text += ("\n(untimed __getitem__: the loader's time per image with no transform timed; its share column is the "
             "timed __getitem__ against it, minus 1: what the timing itself costs, and noise where it is below zero)")
    if small:
        text += f"\n({len(small)} more under {SMALL_MS} ms per image: {', '.join(small)})"
    return text


def _phase_table(phase: PhaseProfile, title: str) -> str:
    rows = [[t.name, t.mean_ms, t.p95_ms, f"{t.share:.1%}"] for t in phase.transforms if t.mean_ms >= SMALL_MS]
    rows.append(["total per image", phase.total_ms, phase.total_p95_ms, "100%"])
    return table(["transform", "ms", "p95", "share"], [[_cell(v) for v in r] for r in rows], title=title)


def _resolution_table(report: AugmentationReport) -> str:
    chain = "pipeline" if report.pipeline else "default"
    rows = []
    for size in sorted(report.sizes):
        row: list = [size]
        for phase in ("mosaic", "close_mosaic"):
            p = report.phase(phase, size, chain)
            top = p.transforms[0] if p else None
            row += [p.total_ms if p else None, f"{top.name} {top.mean_ms:.2f}" if top else "-"]
        rows.append(row)
    table_text = table(["imgsz", "mosaic ms", "top (mosaic)", "close_mosaic ms", "top (close_mosaic)"],
                       [[_cell(v) for v in r] for r in rows], title="cost per image against imgsz")
    fits = [f"{f.phase}: {f.growth}, {f.fixed_ms:.2f} ms + {f.per_mpx_ms:.2f} ms per megapixel"
            for f in report.resolution]
    return table_text + ("\ngrowth: " + "; ".join(fits) if fits else "")


def _loader_table(report: AugmentationReport) -> str:
    caches = [c for c in ("none", "ram", "disk") if any(s.cache == c for s in report.loader)]
    workers = sorted({s.workers for s in report.loader})
    rows = []
    for w in workers:
        row: list = [w]
        for c in caches:
            sample = next((s for s in report.loader if s.cache == c and s.workers == w), None)
            row.append(sample.images_per_s if sample else None)
        rows.append(row)
    notes = sorted({f"cache={s.cache}: {s.note}" for s in report.loader if s.note})
    text = table(["workers"] + [f"cache={c} img/s" for c in caches], [[_cell(v, 1) for v in r] for r in rows],
                 title=f"DataLoader throughput (batch {report.batch_size}, the training chain's first phase)")
    return text + "".join(f"\n  {n}" for n in notes)


def _cell(value: object, digits: int = 2) -> str:
    return fmt(value, digits) if isinstance(value, float) else fmt(value)
