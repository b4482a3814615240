"""A training job prepared once: arguments, dataset, task, model and run folder checked; nothing trains.

`prepare()` is shared by every command that trains or steps a model (train, fit, sweep,
augcost): it reads and checks the dataset once, and the job it returns is passed on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionbatch.checks import STRIDE
from visionbatch.dataset import DatasetSummary, load_dataset
from visionbatch.errors import ConfigError, DatasetError
from visionbatch.keys import visionbatch_keys
from visionbatch.rundir import check_project, check_run_name
from visionbatch.ultralytics.args import check_train_args
from visionbatch.ultralytics.models import (
    check_model,
    load_checkpoint_safely,
    model_task,
)
from visionbatch.ultralytics.offline import DEFAULT_MODELS, TASKS
from visionbatch.values import BatchRequest, parse_batch

if TYPE_CHECKING:  # the plan a job carries once fit has run: a type only (fit sits above this layer)
    from visionbatch.fit.distributed import DistributedPlan
    from visionbatch.fit.plan import BatchPlan

DEFAULT_BATCH = 16  # Ultralytics' default
# visionbatch's own train keys (beyond Ultralytics'), name -> help, from the one registry (visionbatch.keys).
TRAIN_KEYS: dict[str, str] = visionbatch_keys("train")



SWITCHES = ("augcost", "trust_checkpoint", "plan_cache", "remap_classes")



@dataclass(frozen=True, slots=True)
class TrainingJob:
    """Everything decided before training starts.

    Attributes:
        dataset: the checked data.yaml.
        task: 'detect' or 'segment'.
        model: model YAML or checkpoint to train.
        batch: what `batch=` asked for.
        args: the arguments Ultralytics receives (batch filled in once chosen).
        options: visionbatch's own keys (TRAIN_KEYS), kept away from Ultralytics.
        notes: decisions the user should see.
        plan: the batch plan, when the batch was fitted (for DDP: the plan of the GPU that set the per-GPU batch).
        distributed: the DDP run's plan, when the batch was fitted for several GPUs or torchrun's ranks.
    """

    dataset: DatasetSummary
    task: str
    model: str
    batch: BatchRequest
    args: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    plan: BatchPlan | None = None
    distributed: DistributedPlan | None = None

    @property
    def batch_size(self) -> int:
        return int(self.args["batch"])



def prepare(data: str | os.PathLike, overrides: Mapping[str, Any], extra_keys: Mapping[str, str] = TRAIN_KEYS,
            command: str = "train") -> TrainingJob:
    """Check arguments and dataset; choose task, model and output folder. Trains nothing.

    Every key is checked once, here: Ultralytics' train keys plus `extra_keys` (visionbatch's keys
    of `command`, which messages name). The job is then passed on, never prepared again.

    Raises:
        ConfigError: an argument is unknown, malformed or impossible.
        DatasetError: the data.yaml, its images or labels cannot be trained on.
    """
    if "data" in overrides:
        raise ConfigError(f"data= is given twice ({data} and data={overrides['data']}): pass the data.yaml once")
    overrides, cfg_notes = _with_cfg(overrides)
    args = check_train_args(overrides, extra_keys=list(extra_keys), command=command)
    options = {k: args.pop(k) for k in list(args) if k in extra_keys}
    for key in SWITCHES:
        if not isinstance(options.get(key, False), bool):
            raise ConfigError(f"{key}={options[key]} is not a switch: use {key}=True or {key}=False")
    trust = bool(options.get("trust_checkpoint", False))
    _check_file_keys(args, trust)
    batch = parse_batch(args["batch"]) if "batch" in args else BatchRequest(DEFAULT_BATCH, None, "default")
    dataset = load_dataset(data, split=str(args.get("split") or "val"),
                           remap_classes=bool(options.get("remap_classes", False)))
    task, model = _task_and_model(args.get("task"), args.get("model"), dataset, trust)
    _check_run_folder(args, dataset, task)
    notes = cfg_notes + list(dataset.notes)
    if task == "detect" and dataset.segmentable and "task" not in args and "model" not in args:
        notes.append("labels are polygons: task=segment trains segmentation on the same data")
    args.update(data=dataset.yaml_path, model=model, task=task, project=_project(args.get("project"), task))
    if batch.batch_size is not None:
        _check_last_batch(batch.batch_size, args, dataset)
        args["batch"] = batch.batch_size
    else:
        args.pop("batch", None)  # chosen by choose_batch()
    return TrainingJob(dataset, task, model, batch, args, options, tuple(notes))



def _with_cfg(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics' `cfg=other.yaml`: its keys as defaults under the ones given here, read with visionbatch's
    bounded YAML loader and checked like every other argument (Ultralytics would read it unchecked)."""
    from visionbatch.safeyaml import load_yaml

    merged = dict(overrides)
    cfg = merged.pop("cfg", None)
    if cfg is None:
        return merged, []
    text = str(cfg)
    if "://" in text or not Path(text).expanduser().is_file():
        raise ConfigError(f"cfg={text}: no such local file (visionbatch never downloads): pass a YAML of train "
                          f"arguments, or give them as key=value")
    content = load_yaml(Path(text).expanduser(), ConfigError, f"cfg={text}")
    if content is None:
        return merged, []
    if not isinstance(content, dict) or not all(isinstance(k, str) for k in content):
        raise ConfigError(f"cfg={text}: expected a mapping of train arguments (epochs: 50, imgsz: 640, ...)")
    content.pop("cfg", None)
    content.pop("mode", None)
    notes = [f"cfg={text}'s data: is ignored: the DATA argument is what trains"] if content.pop("data", None) else []
    return {**content, **merged}, notes



def _check_file_keys(args: Mapping[str, Any], trust: bool) -> None:
    """Arguments Ultralytics would fetch or load (pretrained=, distill_model=, resume=): local files, loaded safely."""
    for key, value in args.items():
        if isinstance(value, str) and "://" in value:
            raise ConfigError(f"{key}={value}: visionbatch never downloads: pass a local file")
    pretrained = args.get("pretrained")
    if isinstance(pretrained, str):
        _check_local_checkpoint("pretrained", pretrained, trust, "or pretrained=True/False")
    resume = args.get("resume")
    if isinstance(resume, str):
        _check_local_checkpoint("resume", resume, trust, "(a run's weights/last.pt), or resume=True")
    distill = args.get("distill_model")
    if distill not in (None, False):
        if not isinstance(distill, str) or not str(distill).endswith((".pt", ".yaml", ".yml")):
            raise ConfigError(f"distill_model={distill}: expected a local teacher checkpoint (.pt) or model YAML")
        model_task(distill, trust)



def _check_local_checkpoint(key: str, value: str, trust: bool, alternative: str) -> None:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{key}={value}: no such file, and visionbatch never downloads weights: pass a local .pt "
                          f"{alternative}")
    checkpoint = load_checkpoint_safely(path, trust, key)
    epoch = checkpoint.get("epoch")
    if key == "resume" and (not isinstance(epoch, int) or epoch < 0):
        raise ConfigError(f"resume={value}: that run finished (its checkpoint keeps no optimizer state), so there "
                          f"is nothing to resume: train on from it with model={value}")



def _check_run_folder(args: Mapping[str, Any], dataset: DatasetSummary, task: str) -> None:
    """Where the run will write: a new folder, never inside the dataset, and only a run's own folder on resume.

    - `name=` is one folder name (it cannot climb out of `project=`);
    - an absolute `project=` may not lie inside the dataset's folder; `./runs` (the default, and where a
      relative `project=` goes) may not lie inside its image or label folders (the next run would
      train on the plots);
    - `exist_ok=True` may not write over a folder that already holds files;
    - `resume=` continues the run a checkpoint was saved in (`<run>/weights/last.pt`), nowhere else.
    """
    if args.get("name") is not None:
        check_run_name(args["name"], "train")
    project = args.get("project")
    if project:
        check_project(project, task)
    base = Path(str(project)).expanduser() if project else Path.cwd() / "runs"
    chosen = bool(project) and base.is_absolute()  # a relative project= lands under ./runs/<task>/, as Ultralytics'
    protected = _data_folders(dataset) | ({Path(dataset.root).resolve()} if chosen else set())
    target = Path(_project(str(project) if project else None, task)).resolve()
    _refuse_inside(target, protected, f"project={project}" if project else f"the working folder's runs/ ({target})")
    run = target / str(args.get("name") or "train")
    if args.get("exist_ok") and run.is_dir() and any(run.iterdir()):
        raise ConfigError(f"exist_ok=True would write over {run}, which holds a previous run: pick another name=, "
                          f"or move that folder away")
    resume = args.get("resume")
    checkpoint = resume if isinstance(resume, str) else args.get("model") if resume is True else None
    if isinstance(checkpoint, str) and checkpoint.endswith(".pt"):
        weights = Path(checkpoint).expanduser().resolve().parent
        if weights.name != "weights" or not (weights.parent / "args.yaml").is_file():
            raise ConfigError(f"resume: {checkpoint} is not in a run folder (<run>/weights/last.pt, beside args.yaml), "
                              f"so there is no run to continue: train from it with model={checkpoint} instead")
        _refuse_inside(weights.parent, protected | {Path(dataset.root).resolve()}, f"resume: the run of {checkpoint}")



def _refuse_inside(target: Path, protected: set[Path], what: str) -> None:
    inside = next((p for p in sorted(protected) if target == p or target.is_relative_to(p)), None)
    if inside is not None:
        raise ConfigError(f"{what} is inside the dataset's {inside}, which visionbatch never writes: pass "
                          f"project= a folder outside it")



def _data_folders(dataset: DatasetSummary) -> set[Path]:
    """The folders holding the dataset's images and their labels, resolved."""
    from visionbatch.dataset import label_path

    folders: set[Path] = set()
    for split in dataset.splits().values():
        for image_folder in split.image_folders:
            folders.add(Path(image_folder).resolve())
            folders.add(Path(label_path(os.path.join(image_folder, "x.jpg"))).parent.resolve())
    return folders



def _check_last_batch(batch_size: int, args: Mapping[str, Any], dataset: DatasetSummary) -> None:
    """Refuse what Ultralytics' trainer refuses only after building everything: a last batch of one image at a
    size where the deepest feature map is 1x1 (BatchNorm cannot train one value per channel)."""
    from visionbatch.dataset import train_count

    stride = STRIDE
    imgsz = int(args.get("imgsz", 640))
    smallest = max(stride, int(imgsz * (1 - float(args.get("multi_scale", 0.0) or 0.0)))) // stride * stride
    images = train_count(dataset.train.images, args.get("fraction", 1.0))
    if smallest < 2 * stride and images % batch_size == 1:
        raise ConfigError(
            f"batch={batch_size} with {images} training images leaves a last batch of 1 image, which BatchNorm "
            f"cannot train at imgsz={smallest}: use another batch size, or imgsz={2 * stride} or more"
        )



def _task_and_model(task: str | None, model: str | None, dataset: DatasetSummary, trust: bool = False
                    ) -> tuple[str, str]:
    if model is not None:
        model = str(model)
        found = model_task(model, trust)
        if found not in TASKS:
            raise ConfigError(f"model={model} is a {found} model: visionbatch trains detect or segment models")
        if task is not None and task != found:
            raise ConfigError(
                f"task={task} but model={model} is a {found} model: use model={DEFAULT_MODELS[task]} "
                f"(or another {task} model), or leave task out"
            )
        task = found
    task = task or "detect"
    model = model or DEFAULT_MODELS[task]
    check_model(model)
    if task == "segment" and not dataset.segmentable:
        boxes = dataset.train.instances - dataset.train.polygons
        raise DatasetError(
            f"{dataset.yaml_path}: task=segment needs polygon labels, but {boxes} of "
            f"{dataset.train.instances} training objects are boxes: label them as polygons "
            f"('class x1 y1 x2 y2 ...'), or train task=detect"
        )
    return task, model



def _project(project: str | None, task: str) -> str:
    """Ultralytics' run folder, with runs_dir fixed to ./runs: runs/<task>[/<project>]."""
    base = Path.cwd() / "runs" / task
    if not project:
        return str(base)
    path = Path(project).expanduser()
    return str(path if path.is_absolute() else base / path)
