"""`profile_augmentation()`: what each transform, each resolution and each loader setting costs.

The flow: check the arguments and the dataset (as `visionbatch train` does), link a sample of
the dataset into a temporary folder, then with Ultralytics' own code
1. build the training dataset as the trainer does (`build_yolo_dataset` with the same cfg) at
   each imgsz, time every transform with mosaic and after `close_mosaic()`, and the validation
   chain at the training size;
2. time the real DataLoader for each workers x cache setting;
3. time the training step (or take the user's figure) and set the two against each other.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from visionbatch.augment import analysis, timing
from visionbatch.augment.loader import measure as measure_loader
from visionbatch.augment.options import (
    AUGCOST_KEYS,
    CACHE_LIMIT_BYTES,
    CACHES,
    DEFAULT_IMAGES,
    DEFAULT_REPEATS,
    DEFAULT_SECONDS,
    LOADER_IMAGES,
    cache_mode,
    check_caches,
    check_count,
    check_positive,
    check_sizes,
    check_workers,
)
from visionbatch.augment.pipeline import Pipeline, load_pipeline
from visionbatch.augment.report import (
    AugmentationReport,
    LoaderSample,
    PhaseProfile,
    StepTiming,
)
from visionbatch.augment.sample import Sample, link_sample
from visionbatch.console import err
from visionbatch.errors import ConfigError
from visionbatch.process_state import kept_process_state
from visionbatch.ultralytics.offline import (
    cpu_count,
    offline,
    quiet_internal_dataset,
    quiet_ultralytics,
    trusted_checkpoints,
    versions,
)


def profile_augmentation(
    data: str | os.PathLike,
    /,
    *,
    sizes: Sequence[int] | int | None = None,
    pipeline: str | os.PathLike | None = None,
    images: int = DEFAULT_IMAGES,
    seconds: float = DEFAULT_SECONDS,
    loader_workers: Sequence[int] | int | None = None,
    loader_cache: Sequence[Any] | Any = None,
    step_img_per_s: float | None = None,
    seed: int = 0,
    repeats: int = DEFAULT_REPEATS,
    progress: Callable[[str], None] | None = err,
    **train_args: Any,
) -> AugmentationReport:
    """Cost each augmentation, resolution and loader setting inside Ultralytics' real training pipeline.

    Args:
        data: the dataset's data.yaml.
        sizes: image sizes to profile (default: imgsz and its neighbours at half and double).
        pipeline: a serialized `A.Compose` (YAML or JSON from `A.save`) to cost in place of
            Ultralytics' default Albumentations transforms, and against them.
        images: images timed per phase and size.
        seconds: timed seconds per loader setting.
        loader_workers: worker counts to time (default: 0, powers of 2 and the CPU count).
        loader_cache: cache modes to time: False/'none', 'ram', 'disk' (default: all three;
            disk and RAM caches are written for the linked sample only, in a temporary folder).
        step_img_per_s: the training step's images per second, when known (e.g. from a GPU run);
            otherwise the step is timed here on `device`.
        seed: seed of every timed pass.
        repeats: passes per phase at the training size; each image keeps its fastest pass (bursts
            of other processes only ever add time). Other sizes get one pass.
        progress: called with one line per finished measurement (default: stderr); None for silence.
        **train_args: any Ultralytics train argument, with Ultralytics' meaning: imgsz, batch,
            task, model, device, mosaic, mixup, close_mosaic, epochs, cache, workers, fraction, ...

    Returns:
        The report: per-transform costs per phase and size, growth with resolution, loader
        throughput, the step's throughput and the bottleneck verdict.

    Raises:
        ConfigError: an unknown key, an impossible value, or a bad pipeline file.
        DatasetError: the data.yaml, its images or labels cannot be trained on.

    Examples:
        >>> report = profile_augmentation("datasets/shapes/data.yaml", imgsz=320, sizes=[320])  # doctest: +SKIP
        >>> report.phase("mosaic").cost("Mosaic").calls_per_image  # doctest: +SKIP
        1.0
        >>> print(report.verdict.message)  # doctest: +SKIP
        compute-bound on CPU, in series (Ultralytics trains with workers=0 on CPU): ...
    """
    started = time.perf_counter()
    say = progress or (lambda line: None)
    if isinstance(train_args.get("imgsz"), (list, tuple)):
        shown = ",".join(str(v) for v in train_args["imgsz"])
        raise ConfigError(f"imgsz={shown}: imgsz is the training size (one integer); "
                          f"list the sizes to profile with sizes={shown}")
    from visionbatch.checks import check_seed
    from visionbatch.ultralytics.job import TRAIN_KEYS, prepare

    trust = {"trust_checkpoint": TRAIN_KEYS["trust_checkpoint"]}
    job = prepare(data, train_args, extra_keys={**AUGCOST_KEYS, **trust}, command="augcost")  # checked once, here
    if job.batch.batch_size is None:
        raise ConfigError(f"{job.batch.source}: augcost profiles a fixed batch: pass a batch size, e.g. batch=16")
    batch_size = job.batch_size
    requested = int(job.args.get("imgsz", 640))
    imgsz = analysis.stride_multiple(requested)  # the trainer's check_imgsz rounds up to the stride
    sizes_checked = check_sizes(sizes, imgsz)
    images = check_count("images", images, low=2, high=10_000)
    seed = check_seed(seed)
    repeats = check_count("repeats", repeats, low=1, high=20)
    seconds = check_positive("seconds", seconds, high=600)
    workers_swept = check_workers(loader_workers)
    caches = check_caches(loader_cache)
    step_given = None if step_img_per_s is None else check_positive("step_img_per_s", step_img_per_s)
    custom = load_pipeline(pipeline) if pipeline is not None else None
    args = {k: v for k, v in job.args.items() if k not in {"project", "name"}}
    args["imgsz"] = imgsz

    with kept_process_state(), offline(), quiet_ultralytics(), timing.rng_kept(), \
            trusted_checkpoints(bool(job.options.get("trust_checkpoint"))), \
            tempfile.TemporaryDirectory(prefix="visionbatch-augcost-") as tmp:
        from ultralytics.cfg import DEFAULT_CFG, get_cfg
        from ultralytics.data.utils import check_det_dataset

        cfg = get_cfg(DEFAULT_CFG, args)
        sample = link_sample(job.dataset, Path(tmp), images, LOADER_IMAGES, cfg.fraction)
        data_dict = check_det_dataset(str(sample.yaml_path))
        run = _Run(cfg, data_dict, sample, batch_size, seed, repeats, custom, say)
        phases = run.training_phases(sizes_checked, keep=batch_size)
        phases.append(run.validation())
        train_cache, train_workers = cache_mode(cfg.cache), min(int(cfg.workers), cpu_count())
        loader = run.loader_sweep(imgsz, sorted(set(workers_swept) | {train_workers}),
                                  [c for c in CACHES if c in set(caches) | {train_cache}], seconds, job.args.get("device"))
        step, step_note = run.step(job, step_given, job.args.get("device"))

    studied = "pipeline" if custom else "default"
    head = next(p for p in phases if p.imgsz == imgsz and p.chain == studied and p.phase != "val")
    smaller = next((p for p in sorted(phases, key=lambda p: -p.imgsz)
                    if p.phase == head.phase and p.chain == studied and p.imgsz < imgsz), None)
    verdict = None
    if step is not None:
        serial = step.source == "cpu"
        verdict = analysis.decide(loader, step.images_per_s, workers=0 if serial else train_workers,
                                  cache=train_cache, profile=head, smaller=smaller, serial=serial,
                                  device_word="GPU" if step.source == "cuda" else "accelerator")
    notes = _notes(job, cfg, sample, batch_size, custom, step, step_note, run, head)
    if imgsz != requested:
        notes.insert(0, f"imgsz={requested} is not a multiple of {analysis.STRIDE}: Ultralytics trains at "
                        f"imgsz={imgsz}, so that is what was profiled")
    report = AugmentationReport(
        data=job.dataset.yaml_path,
        task=job.task,
        model=job.model,
        imgsz=imgsz,
        batch_size=batch_size,
        sizes=sizes_checked,
        pipeline=custom.path if custom else None,
        train_images=sample.train_images,
        sampled_images=sample.linked,
        seed=seed,
        args=args,
        phases=tuple(phases),
        resolution=analysis.resolution_fits(phases, studied),
        pipeline_delta=analysis.pipeline_deltas(phases, imgsz) if custom else (),
        loader=tuple(loader),
        step=step,
        verdict=verdict,
        notes=tuple(notes),
        versions=versions(),
        wall_s=round(time.perf_counter() - started, 3),
    )
    if verdict is not None:
        say(f"augcost: {verdict.message}")
    return report


class _Run:
    """The measurements of one profile, sharing the linked sample and Ultralytics' cfg."""

    def __init__(self, cfg: Any, data: dict, sample: Sample, batch_size: int, seed: int, repeats: int,
                 custom: Pipeline | None, say: Callable[[str], None]) -> None:
        self.cfg, self.data, self.sample = cfg, data, sample
        self.batch_size, self.seed, self.repeats, self.custom, self.say = batch_size, seed, repeats, custom, say
        self.kept: list[dict] = []
        self.collate: Callable | None = None
        self.schedule = analysis.mosaic_schedule(int(cfg.epochs), int(cfg.close_mosaic))
        self.shapes: list[tuple[int, int]] | None = None
        self.plain_build_s = 0.0  # build time of a loader dataset without cache: the base of cache_fill_s

    def dataset(self, imgsz: int, chain: str, mode: str = "train", cache: str | None = None,
                count: int | None = None) -> Any:
        """The dataset exactly as the trainer builds it, over the linked sample."""
        from ultralytics.data.build import build_yolo_dataset

        cfg = self.hyp(imgsz, chain, cache)
        with quiet_internal_dataset():  # timed, never trained on: no advice for a training run
            if mode == "val":  # the trainer's val loader: rect batches at twice the batch
                return build_yolo_dataset(cfg, self.data["val"], self.batch_size * 2, self.data, mode="val",
                                          rect=True, stride=32, fraction=1.0)
            return build_yolo_dataset(cfg, self.data["train"], self.batch_size, self.data, mode="train",
                                      stride=32, fraction=count or self.sample.profile_images)

    def hyp(self, imgsz: int, chain: str, cache: str | None = None) -> Any:
        """The trainer's arguments for a dataset (also what `close_mosaic` rebuilds the chain from)."""
        from ultralytics.cfg import get_cfg

        overrides: dict[str, Any] = {"imgsz": imgsz}
        if cache is not None:
            overrides["cache"] = False if cache == "none" else cache
        cfg = get_cfg(self.cfg, overrides)
        if chain == "pipeline":
            cfg.augmentations = list(self.custom.transforms)
        return cfg

    def training_phases(self, sizes: Sequence[int], keep: int) -> list[PhaseProfile]:
        chains = ["pipeline", "default"] if self.custom else ["default"]
        phases = []
        for size in sizes:
            for chain in chains if size == sizes[0] else chains[:1]:
                twins = self.dataset(size, chain), self.dataset(size, chain)
                self.collate = twins[0].collate_fn
                for phase, epochs in self.schedule:
                    if phase == "close_mosaic":
                        for dataset in twins:  # as BaseTrainer._close_dataloader_mosaic: a rebuilt chain
                            dataset.close_mosaic(hyp=self.hyp(size, chain))
                    want = keep if not self.kept and chain == chains[0] else 0
                    phases.append(self._profile(twins, phase, size, chain, epochs, want))
        return phases

    def validation(self) -> PhaseProfile:
        size, chain = int(self.cfg.imgsz), "pipeline" if self.custom else "default"
        twins = self.dataset(size, chain, mode="val"), self.dataset(size, chain, mode="val")
        return self._profile(twins, "val", size, chain, None, 0, batch_size=self.batch_size * 2)

    def _profile(self, twins: tuple[Any, Any], phase: str, imgsz: int, chain: str, epochs: int | None, keep: int,
                 batch_size: int | None = None) -> PhaseProfile:
        repeats = self.repeats if imgsz == int(self.cfg.imgsz) else 1  # other sizes feed a coarse fit only
        result = timing.profile_pass(twins, range(len(twins[0])), batch_size or self.batch_size, self.seed, keep,
                                     repeats)
        if keep:
            self.kept = result.kept
        rows, total, total_p95 = analysis.summarise(result.images, result.calls)
        getitem = sum(sum(v for k, v in image.items() if k != "collate") for image in result.images)
        profile = PhaseProfile(
            phase=phase, imgsz=imgsz, chain=chain, images=len(result.images), epochs=epochs, transforms=rows,
            total_ms=total, total_p95_ms=total_p95,
            getitem_ms=round(1000 * getitem / len(result.images), 6),
            unprofiled_ms=round(1000 * sum(result.unprofiled_s) / len(result.unprofiled_s), 6),
            identical_output=result.identical,
            total_sem_ms=analysis.total_sem_ms(result.images),
        )
        top = ", ".join(f"{r.name} {r.mean_ms:.1f}" for r in rows[:3])
        self.say(f"augcost: {phase:<12} imgsz={imgsz:<5} {chain:<8} {total:7.2f} ms/img "
                 f"(p95 {total_p95:.2f}; {top}) over {profile.images} images")
        return profile

    def loader_sweep(self, imgsz: int, workers: Sequence[int], caches: Sequence[str], seconds: float,
                     device: Any) -> list[LoaderSample]:
        from visionbatch.augment.step import step_device

        chain = "pipeline" if self.custom else "default"
        first_phase = self.schedule[0][0]
        torch_device = step_device(device)
        samples = []
        for cache in caches:
            count, note = self._cache_count(cache, imgsz)
            if count is None:
                samples += [LoaderSample(cache, w, 0, None, 0, 0.0, 0.0, note) for w in workers]
                self.say(f"augcost: loader cache={cache}: skipped ({note})")
                continue
            dataset, build_s = self._timed_build(imgsz, chain, cache, count)
            fill_s = max(build_s - self.plain_build_s, 0.0) if cache != "none" else 0.0  # build time beyond no cache
            if cache != "none" and dataset.cache is None:  # Ultralytics refused (RAM or disk space)
                samples += [LoaderSample(cache, w, 0, None, 0, 0.0, 0.0, "Ultralytics refused the cache (space)")
                            for w in workers]
                continue
            if first_phase == "close_mosaic":
                dataset.close_mosaic(hyp=self.hyp(imgsz, chain, cache))
            for w in workers:
                sample = measure_loader(dataset, self.batch_size, w, seconds, torch_device, cache, fill_s)
                if note:
                    sample = dataclasses.replace(sample, note=note)
                samples.append(sample)
                rate = f"{sample.images_per_s:.1f} img/s" if sample.images_per_s else "not measured"
                self.say(f"augcost: loader cache={cache:<4} workers={w} ({sample.workers_used} started): {rate} "
                         f"({sample.images} images in {sample.seconds:.1f} s)")
        return samples

    def _cache_count(self, cache: str, imgsz: int) -> tuple[int | None, str]:
        """How many linked images a cache measurement may hold, and why fewer than all."""
        linked = self.sample.linked
        if cache == "none":
            return linked, ""
        limit = CACHE_LIMIT_BYTES[cache]
        if self.shapes is None:  # original (height, width) of each linked image, from the label scan
            self.shapes = [tuple(lb["shape"]) for lb in self._timed_build(imgsz, "default", "none", linked)[0].labels]
        channels = int(self.data.get("channels", 3))
        total, count = 0, 0
        for height, width in self.shapes:
            if cache == "ram":  # load_image resizes the long side to imgsz before caching
                ratio = imgsz / max(height, width)
                height, width = math.ceil(height * ratio), math.ceil(width * ratio)
            if total + height * width * channels > limit:
                break
            total, count = total + height * width * channels, count + 1
        if count < min(linked, 2 * self.batch_size):
            return None, f"the sample would need more than {limit / 2**30:.0f} GiB of {cache} cache"
        note = f"{count} of {linked} images (cache held under {limit / 2**30:.0f} GiB)" if count < linked else ""
        return count, note

    def _timed_build(self, imgsz: int, chain: str, cache: str, count: int) -> tuple[Any, float]:
        """A loader dataset and the seconds its build took (the cache fill included)."""
        start = time.perf_counter()
        dataset = self.dataset(imgsz, chain, cache=cache, count=count)
        seconds = time.perf_counter() - start
        if cache == "none":
            self.plain_build_s = seconds
        return dataset, seconds

    def step(self, job: Any, given: float | None, device: Any) -> tuple[StepTiming | None, str]:
        """The training step fit measures, timed on a batch of the kept samples (or the user's figure)."""
        from visionbatch.augment.step import given_step, measure_step

        model = job.model
        if given is not None:
            return given_step(given, model, self.batch_size), ""
        if not self.kept or self.collate is None:
            return None, "no training batch was profiled, so the step was not timed"
        from visionbatch.devices.oom import is_oom

        try:
            step = measure_step(job, self.kept, self.collate, device, self.batch_size,
                                channels=int(self.data.get("channels", 3)))
        except Exception as exc:  # the one OOM rule: a cuBLAS/cuDNN allocation failure is out of memory too
            if not is_oom(exc):
                raise
            return None, (f"the training step ran out of memory at batch {self.batch_size}: pass a smaller "
                          f"batch, or step_img_per_s= from a run that fits")
        self.say(f"augcost: step {model} batch {step.measured_batch_size} on {step.device}: "
                 f"{step.images_per_s:.1f} img/s")
        return step, ""


def _notes(job: Any, cfg: Any, sample: Sample, batch_size: int, custom: Pipeline | None,
           step: StepTiming | None, step_note: str, run: _Run, head: PhaseProfile) -> list[str]:
    notes = [f"measured on {sample.linked} of {sample.train_images} training images (per-transform profile: "
             f"{sample.profile_images}), linked into a temporary folder: nothing is written to your dataset"]
    if run.schedule[0][0] == "close_mosaic":
        notes.append(f"epochs={cfg.epochs} <= close_mosaic={cfg.close_mosaic}: Ultralytics closes mosaic before the "
                     f"first epoch, so mosaic never runs and only the close_mosaic chain is profiled")
    elif float(cfg.mosaic) == 0:
        notes.append("mosaic=0: the 'mosaic' phase runs without Mosaic (Ultralytics keeps it in the chain with p=0)")
    buffer = min(sample.train_images, batch_size * 8, 1000)
    if sample.train_images <= buffer and cache_mode(cfg.cache) == "none":
        notes.append(f"{sample.train_images} training images fit Mosaic's buffer ({buffer} = min(images, 8 x batch, "
                     f"1000)): after the first epoch each loader worker keeps every image in RAM, so load_image "
                     f"costs ~0 then; the profile shows the first epoch")
    if sample.npy_beside_images:
        notes.append("your dataset has .npy image caches beside some images; Ultralytics would read those even "
                     "with cache=False, the measurements here decode the images")
    if custom is not None:
        notes.append(f"pipeline={custom.path} ({', '.join(custom.names) or 'empty'}) replaces Ultralytics' default "
                     f"Albumentations transforms, as train(augmentations=[...]) does")
        if custom.compose_p != 1:
            notes.append(f"the pipeline's Compose p={custom.compose_p:g} is dropped: Ultralytics composes the "
                         f"transforms itself with p=1")
    if float(cfg.multi_scale) > 0:
        notes.append(f"multi_scale={cfg.multi_scale}: the step's input size varies in training; it was timed at "
                     f"imgsz={cfg.imgsz}")
    if step is not None and step.source == "cpu":
        notes.append(f"the step was timed on this CPU at batch {step.measured_batch_size} (images/s on a CPU hardly "
                     f"depend on the batch); on CPU Ultralytics trains with workers=0, so the loader's workers "
                     f"only matter on a GPU")
    elif step is not None:
        notes.append("loader throughput was measured alone; in training the main process needs CPU time too")
    if step_note:
        notes.append(step_note)
    labels, warp = head.cost("labels"), head.cost("RandomPerspective")
    if job.task == "detect" and job.dataset.train.polygons and labels and warp:
        notes.append(
            f"labels are polygons: even for task=detect Ultralytics resamples each to 1000 points and warps them in "
            f"RandomPerspective (labels {labels.mean_ms:.1f} + RandomPerspective {warp.mean_ms:.1f} of "
            f"{head.total_ms:.1f} ms per image here); box labels skip that work (with the default degrees=0 and "
            f"shear=0, boxes differ only where objects are cut at the border)")
    return notes


def training_callback(data: str, args: Mapping[str, Any], **options: Any) -> Callable[[Any], None]:
    """An `on_pretrain_routine_start` callback: profile with the run's arguments, save into its folder.

    `options` go to `profile_augmentation` (sizes, seconds, ...); batch and device are the trainer's.
    """

    def on_pretrain_routine_start(trainer: Any) -> None:
        from visionbatch.augment.figure import JSON_NAME, save_report

        overrides = {k: v for k, v in args.items() if k not in {"data", "project", "name"}}
        overrides.update(batch=int(trainer.batch_size), device=str(trainer.device))
        report = save_report(profile_augmentation(data, **options, **overrides), Path(trainer.save_dir))
        err(f"augcost: {Path(report.save_dir) / JSON_NAME}")

    return on_pretrain_routine_start
