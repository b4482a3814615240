"""The key registry: every visionbatch `key=value` key defined once, with one meaning in every command.

Each `Key` holds the key's one help line (the same in every command's `--help`), the check of its
value, the Python parameter it becomes and the commands that take it. Every command's parser
(`read_keys`), the key list in its `--help` (`help_block`) and README's key table
(`markdown_table`) come from `KEYS`. Ultralytics' own train keys are not listed, except `batch`
and `imgsz`, whose meaning visionbatch states: train, fit, sweep and augcost pass Ultralytics' keys
through unchanged, with Ultralytics' meaning and checks (`ultralytics.args.check_train_args`).

Where unifying a meaning changed a spelling, the old spelling is refused in one line that names
the new one (`OLD_SPELLINGS`). How values are read (`smart_value`, `parse_batch`, ...) lives in
`visionbatch.values`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from visionbatch.checks import (
    check_fraction,
    check_labels_per_image,
    check_oom_risk,
    check_seed,
    whole_number,
)
from visionbatch.devices.catalog import find_target
from visionbatch.errors import ConfigError
from visionbatch.text import shown, suggest
from visionbatch.units import parse_bytes
from visionbatch.values import (
    as_list,
    check_switch,
    parse_batch,
)

COMMANDS = ("train", "fit", "sweep", "augcost", "infer")
_TRAINING = ("train", "fit", "sweep", "augcost")  # the commands that pass Ultralytics' train keys through


@dataclass(frozen=True, slots=True)
class Key:
    """One `key=value` key, with one meaning wherever it is taken.

    Attributes:
        name: the key as typed (`memory_fraction`).
        help: its help line, the same in every command that takes it.
        commands: the commands that take it.
        check: refuses a malformed value in one line, before the command runs (None: the command
            checks it, because the check needs other arguments, e.g. infer's imgsz against the
            model's stride, or because Ultralytics' argument checks do).
        convert: turns the command line's value into the Python parameter's form (`batch_sizes=4`
            -> `[4]`); None passes it as given.
        parameters: (command, Python keyword) where the keyword is not `name`.
        ultralytics: also an Ultralytics train key (batch, imgsz): train and augcost hand it to
            Ultralytics, so it is no visionbatch option there.
    """

    name: str
    help: str
    commands: tuple[str, ...]
    check: Callable[[Any], object] | None = None
    convert: Callable[[Any], Any] | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    ultralytics: bool = False

    def parameter(self, command: str) -> str:
        """The Python keyword this key becomes in `command`."""
        return dict(self.parameters).get(command, self.name)


def _minimum_probes(value: Any) -> int:
    return whole_number(value, "max_probes", example="max_probes=8", minimum=2)  # the planner needs 2 probes


def _switch(key: str) -> Callable[[Any], bool]:
    return partial(check_switch, key=key)


def _size(key: str) -> Callable[[Any], int]:
    return partial(parse_bytes, key=key)


KEYS: tuple[Key, ...] = (
    # -- shared: one meaning in every command that takes them
    Key("batch", "the training batch size, as in Ultralytics (batch=16); auto, a memory fraction (0.85) or -1 (0.6) "
                 "fit it to the memory instead (train, fit, sweep)", _TRAINING, check=parse_batch, ultralytics=True),
    Key("imgsz", "one image size in pixels: the training size, or infer's input size (a multiple of 32); "
                 "several sizes go in sizes=", (*_TRAINING, "infer"), ultralytics=True),
    Key("sizes", "image sizes to compare, e.g. sizes=320,640,1280; imgsz is always one of them (default: sweep "
                 "320,640,1024,1280; augcost imgsz and its neighbours at 0.5x and 2x)", ("sweep", "augcost")),
    Key("memory_fraction", "share of the memory to aim at: of memory_budget= when given, else of what this process "
                           "may use (the device's or target's, less what other processes and a Jetson's OS hold), "
                           "0 < f <= 1 (default 0.9; infer sets no memory limit unless target=, memory_budget= or "
                           "memory_fraction= is given)",
        ("fit", "sweep", "infer"), check=check_fraction),
    Key("memory_budget", "the memory to fit into instead of the device's: a size (4GiB, 512MiB) or bytes (a CPU fit "
                         "needs one); on a CPU it bounds the whole training process's resident memory: a measured "
                         "baseline (Python, torch, Ultralytics, the model and optimizer, the trainer and its loader) "
                         "plus each step's growth", ("train", "fit", "sweep", "infer"), check=_size("memory_budget")),
    Key("target", "a device to plan for without having it: a GPU (gtx1050, rtx3060, t4, ...), a Jetson module "
                  "(orin-nano-8gb, ...) or a size (6GiB); timings and traces come from this machine",
        ("fit", "sweep", "infer"), check=find_target),
    Key("trust_checkpoint", "True loads *.pt files with Ultralytics' unrestricted loader, which can run code stored "
                            "in the file: only for files you trust (default: the safe loader)",
        COMMANDS, check=_switch("trust_checkpoint")),
    Key("remap_classes", "True trains on copies of the labels with class ids renumbered 0..N-1 in the order of "
                         "names (for ids Ultralytics refuses, e.g. COCO's 1..90 with gaps); the copies go in "
                         "visionbatch's cache, your files are not changed (default False; infer: with data=)",
        COMMANDS, check=_switch("remap_classes")),
    Key("seconds", "time each setting at least this long: a batch size in infer (default 1), a loader setting in "
                   "augcost (default 2)", ("augcost", "infer"), parameters=(("infer", "seconds_per_batch"),)),
    # -- training
    Key("oom_retries", "out-of-memory recoveries in training before giving up: each resumes from the last complete "
                       "epoch at a smaller batch with more gradient accumulation, so the effective batch stays; "
                       "validation retries at half its batch on its own (default 3, 0 turns recovery off)",
        ("train",), check=partial(whole_number, key="oom_retries", example="oom_retries=3", minimum=0, maximum=100)),
    Key("augcost", "True profiles the data pipeline first (visionbatch augcost); augcost.json/png go into the run "
                   "folder", ("train",), check=_switch("augcost")),
    Key("labels_per_image", "force this many labels into every training image of the measured batch (default: "
                            "modelled from the dataset's labels through mosaic, at oom_risk)",
        ("train", "fit", "sweep"), check=check_labels_per_image),
    Key("oom_risk", "the chance, at most, that any batch of the run carries more labels than the batch was "
                    "measured with (default 0.001)", ("train", "fit", "sweep"), check=check_oom_risk),
    Key("max_probes", "the most training probes to run (default 8)", ("fit",), check=_minimum_probes),
    Key("plan_cache", "False fits the batch again without reading or writing the plan cache (default: reuse a plan "
                      "fitted for the same device, software, model, data and arguments; visionbatch cache list)",
        ("train", "fit"), check=_switch("plan_cache")),
    # -- augcost
    Key("pipeline", "a serialized A.Compose (YAML or JSON, from A.save) to cost in place of Ultralytics' default "
                    "Albumentations transforms", ("augcost",)),
    Key("images", "images timed per phase and size (default 64)", ("augcost",)),
    Key("repeats", "passes per phase at the training size; each image keeps its fastest (default 2)", ("augcost",)),
    Key("loader_workers", "worker counts to time, e.g. loader_workers=0,2,4 (default: 0, powers of 2, the CPU "
                          "count); the run's own workers= is always timed too, for the verdict", ("augcost",)),
    Key("loader_cache", "cache modes to time, e.g. loader_cache=False,ram (default: False,ram,disk; on a temporary "
                        "copy); the run's own cache= is always timed too, for the verdict", ("augcost",)),
    Key("step_img_per_s", "the training step's images/s when known (e.g. from a GPU run); the verdict then has the "
        "loader and the step run side by side, as on a GPU; default: timed here, one after the other on a CPU",
        ("augcost",)),
    Key("seed", "seed of every timed pass (default 0)", ("augcost",), check=check_seed),
    # -- infer
    Key("backend", "onnxruntime, pytorch or tensorrt (default: from the model file, else onnxruntime)", ("infer",)),
    Key("provider", "ONNX Runtime provider: cpu, cuda or tensorrt (default: from device)", ("infer",)),
    Key("batch_sizes", "inference batch sizes to try, e.g. batch_sizes=1,2,4,8 (default: powers of two up to "
                       "max_batch)", ("infer",), convert=as_list),
    Key("max_batch", "largest default batch size (default 64)", ("infer",)),
    Key("latency_ms", "budget for a frame's worst latency: fill wait + p99 batch latency", ("infer",)),
    Key("streams", "camera streams to serve (with fps=)", ("infer",)),
    Key("fps", "frames per second of each stream (with streams=)", ("infer",)),
    Key("half", "fp16 (CUDA devices only)", ("infer",), check=_switch("half")),
    Key("end_to_end", "time letterbox pre-processing and NMS with the model", ("infer",), check=_switch("end_to_end")),
    Key("warmup", "untimed runs per batch first (default 3)", ("infer",), parameters=(("infer", "warmup_runs"),)),
    Key("runs", "timed runs per batch, one pass (default: at least 10, for seconds=, then interleaved rounds "
                "until every throughput's 95% interval is within 3%)", ("infer",)),
    Key("max_seconds", "time bound for the whole sweep, interleaved rounds included (default 90)", ("infer",)),
    Key("device", "cpu, 0 or cuda:0 (default: the GPU if there is one)", ("infer",)),
    Key("threads", "CPU threads (default: every core)", ("infer",)),
    Key("name", "run folder name under runs/infer/", ("infer",)),
    Key("project", "parent folder of the run folder", ("infer",)),
    Key("precision", "precisions to set against fp32 at the chosen batch, throughput and mAP each: fp32, fp16 "
                     "(CUDA only), int8, e.g. precision=fp32,int8 (needs data=); with int8, GPU and Jetson configs "
                     "build a TensorRT INT8 engine from a calibration cache", ("infer",), convert=as_list),
    Key("data", "the dataset YAML for precision=: its val split gives the mAP, its train images calibrate INT8",
        ("infer",)),
    Key("calib_images", "train images INT8 is calibrated on (default 64)", ("infer",)),
    Key("keep_choice", "False chooses afresh from this run's measurements alone (default: keep the policy an "
                       "earlier run chose for the same model, device, load and budgets while this run's "
                       "measurements still carry it, so that reruns agree); the new choice is remembered either way",
        ("infer",), check=_switch("keep_choice")),
)


@dataclass(frozen=True, slots=True)
class OldSpelling:
    """A spelling that a unified meaning replaced: refused with one line that names the new one.

    Attributes:
        command: where it was taken (`infer`); the Python function of that command refuses it too.
        old: the key as it was written (`batch`).
        new: the key that replaced it (`batch_sizes`).
        why: the meaning that took the old spelling's place.
        lists_only: only a list was the old spelling (`sweep imgsz=320,640`; `imgsz=640` is the training size).
    """

    command: str
    old: str
    new: str
    why: str
    lists_only: bool = False

    def applies(self, value: Any) -> bool:
        return not self.lists_only or isinstance(value, (list, tuple))

    def message(self, value: Any) -> str:
        return f"{self.old}={shown(value)}: visionbatch {self.command} takes {self.new}={shown(value)} instead: {self.why}"


OLD_SPELLINGS: tuple[OldSpelling, ...] = (
    OldSpelling("infer", "batch", "batch_sizes", "batch= is the training batch size in every command"),
    OldSpelling("infer", "memory_budget_bytes", "memory_budget",
                "memory_budget= takes a size (4GiB) or bytes in every command and in Python"),
    OldSpelling("sweep", "imgsz", "sizes", "imgsz= is one size, the training size, in every command", lists_only=True),
)


def refuse_old_spelling(command: str, key: str, value: Any) -> None:
    """Raise the one-line ConfigError for an old spelling of a key; return for anything else.

    Examples:
        >>> refuse_old_spelling("sweep", "imgsz", 640)  # one size: the training size
        >>> refuse_old_spelling("sweep", "imgsz", (320, 640))
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: imgsz=320,640: visionbatch sweep takes sizes=320,640 instead: imgsz= is one size, the training size, in every command
    """
    for old in OLD_SPELLINGS:
        if old.command == command and old.old == key and old.applies(value):
            raise ConfigError(old.message(value))


def refuse_removed_keywords(function: str, command: str, removed: Mapping[str, Any]) -> None:
    """For a function's `**removed`: an old keyword's one-line ConfigError, else Python's TypeError.

    Examples:
        >>> refuse_removed_keywords("tune_inference", "infer", {})  # nothing removed was given
        >>> refuse_removed_keywords("tune_inference", "infer", {"memory_budget_bytes": 1024})
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: memory_budget_bytes=1024: visionbatch infer takes memory_budget=1024 instead: memory_budget= takes a size (4GiB) or bytes in every command and in Python
    """
    for key, value in removed.items():
        refuse_old_spelling(command, key, value)
    if removed:
        raise TypeError(f"{function}() got an unexpected keyword argument '{next(iter(removed))}'")


def command_keys(command: str) -> tuple[Key, ...]:
    """The registry keys `command` takes, in the registry's order.

    Examples:
        >>> [key.name for key in command_keys("train")]
        ['batch', 'imgsz', 'memory_budget', 'trust_checkpoint', 'remap_classes', 'oom_retries', 'augcost', 'labels_per_image', 'oom_risk', 'plan_cache']
    """
    if command not in COMMANDS:
        raise ValueError(f"no command {command!r}: one of {', '.join(COMMANDS)}")
    return tuple(key for key in KEYS if command in key.commands)


def accepts(command: str, key: str, ultralytics_keys: Iterable[str] = ()) -> bool:
    """Whether `command` takes `key=`: one of its registry keys, or one of `ultralytics_keys` (Ultralytics'
    train keys, `ultralytics.args.ultralytics_defaults`) that the training commands pass through.

    Examples:
        >>> accepts("fit", "target"), accepts("train", "target"), accepts("train", "memory_budget")
        (True, False, True)
        >>> accepts("train", "epochs", ["epochs"]), accepts("infer", "epochs", ["epochs"])
        (True, False)
    """
    return (any(k.name == key for k in command_keys(command))
            or (command in _TRAINING and key in set(ultralytics_keys)))


def visionbatch_keys(command: str) -> dict[str, str]:
    """`command`'s own keys beside Ultralytics' train keys, name -> help (`ultralytics.job.TRAIN_KEYS`).

    Examples:
        >>> list(visionbatch_keys("train"))  # batch and imgsz are Ultralytics' keys: they go to Ultralytics
        ['memory_budget', 'trust_checkpoint', 'remap_classes', 'oom_retries', 'augcost', 'labels_per_image', 'oom_risk', 'plan_cache']
    """
    return {key.name: key.help for key in command_keys(command) if not key.ultralytics}


def help_block(command: str) -> str:
    """The lines `visionbatch COMMAND --help` lists its keys with, one per key.

    Examples:
        >>> print(help_block("train").splitlines()[2][:66])
          memory_budget=    the memory to fit into instead of the device's
    """
    return "\n".join(f"  {key.name + '=':<18}{key.help}" for key in command_keys(command))


def markdown_table() -> str:
    """README's table of every key: its meaning and the commands that take it.

    Examples:
        >>> print(markdown_table().splitlines()[0])
        | key | meaning | train | fit | sweep | augcost | infer |
    """
    rows = ["| key | meaning | " + " | ".join(COMMANDS) + " |", "|---|---|" + "---|" * len(COMMANDS)]
    for key in KEYS:
        marks = " | ".join("x" if command in key.commands else "" for command in COMMANDS)
        rows.append(f"| `{key.name}` | {key.help} | {marks} |")
    return "\n".join(rows)


# Names other training tools use for an Ultralytics key: `lr` is closest in letters to `lrf` (the final
# learning-rate fraction), but means `lr0`.
OTHER_TOOLS_NAMES = {"lr": "lr0", "learning_rate": "lr0", "img_size": "imgsz", "image_size": "imgsz",
                     "num_workers": "workers", "weight_decay_rate": "weight_decay", "max_epochs": "epochs"}


def check_keys(args: Mapping[str, Any], valid: Iterable[str], command: str, *, ultralytics: bool = True) -> None:
    """Refuse keys that neither Ultralytics (when `ultralytics`) nor `command` knows, suggesting the closest.

    Examples:
        >>> check_keys({"latency": 100}, ["latency_ms", "fps"], "infer", ultralytics=False)
        Traceback (most recent call last):
        visionbatch.errors.ConfigError: unknown argument 'latency=100' (did you mean 'latency_ms'?): see 'visionbatch infer --help' for visionbatch's keys
    """
    valid = set(valid)
    for key, value in args.items():
        if key not in valid:
            also = "; every Ultralytics train key works too" if ultralytics else ""
            meant = OTHER_TOOLS_NAMES.get(key)  # a name other tools use: what it means here, not the closest letters
            hint = f" (did you mean '{meant}'?)" if meant in valid else suggest(key, valid)
            raise ConfigError(f"unknown argument '{key}={shown(value)}'{hint}: "
                              f"see 'visionbatch {command} --help' for visionbatch's keys{also}")


def read_keys(command: str, pairs: Mapping[str, Any], ultralytics_keys: Iterable[str] = ()) -> dict[str, Any]:
    """A command's `key=value` pairs as the Python keyword arguments of its function.

    Refused in one line, in this order: an old spelling (naming the new key), an unknown key
    (suggesting the closest), a value its key's check refuses. Registry keys become their Python
    parameter, converted where the command line writes them differently; `ultralytics_keys`
    (Ultralytics' train keys, for the commands that pass them through) stay as given.

    Examples:
        >>> read_keys("infer", {"warmup": 0, "batch_sizes": 4, "memory_budget": "2GiB"})
        {'warmup_runs': 0, 'batch_sizes': [4], 'memory_budget': '2GiB'}
    """
    for key, value in pairs.items():
        refuse_old_spelling(command, key, value)
    own = {key.name: key for key in command_keys(command)}
    passthrough = set(ultralytics_keys)
    check_keys(pairs, own.keys() | passthrough, command, ultralytics=bool(passthrough))
    kwargs: dict[str, Any] = {}
    for name, value in pairs.items():
        key = own.get(name)
        if key is None:
            kwargs[name] = value
            continue
        if key.check is not None:
            key.check(value)  # the command checks it again; the value goes on as typed, for its messages
        kwargs[key.parameter(command)] = key.convert(value) if key.convert is not None else value
    return kwargs
