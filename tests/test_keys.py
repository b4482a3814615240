"""The key registry (visionbatch.keys): one meaning per key, in every command's parser and --help.

Every command lists exactly the registry keys it takes, with the registry's help line; each one
reaches its Python function as the registry's parameter; a key another command owns is refused;
old spellings get one line naming the new key; and the unified meanings hold to the byte:
`memory_fraction` is a share of the memory this process may use, in infer as in fit.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from functools import partial
from pathlib import Path

import infer_models
import pytest
from test_infer_edge import make_board

from visionbatch.cli import main
from visionbatch.devices import jetson, memory
from visionbatch.devices.catalog import find_target
from visionbatch.devices.memory import Capacity
from visionbatch.errors import ConfigError
from visionbatch.keys import (
    COMMANDS,
    KEYS,
    OLD_SPELLINGS,
    command_keys,
    markdown_table,
    read_keys,
)
from visionbatch.ultralytics.args import ultralytics_defaults

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "datasets" / "shapes" / "data.yaml")
POSITIONAL = {"train": DATA, "fit": DATA, "sweep": DATA, "augcost": DATA, "infer": "yolo11n.yaml"}
GIB = 1 << 30
# The library call each command makes, replaced in the tests by a stub that records its arguments.
LIBRARY = {"train": "visionbatch.train.run.train", "fit": "visionbatch.fit.api.fit_batch",
           "sweep": "visionbatch.fit.sweep.sweep_resolution", "augcost": "visionbatch.augment.profile_augmentation",
           "infer": "visionbatch.infer.tune.tune_inference"}


def help_keys(capsys: pytest.CaptureFixture, command: str) -> dict[str, str]:
    """The `key= help` lines under 'visionbatch keys:' in `visionbatch COMMAND --help`, in order."""
    with pytest.raises(SystemExit):
        main([command, "--help"])
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("visionbatch keys:") + 1
    listed: dict[str, str] = {}
    for line in lines[start:]:
        match = re.fullmatch(r"  (\w+)= *(.+)", line)
        if match is None:
            break
        listed[match.group(1)] = match.group(2)
    return listed


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_exactly_the_registry_keys_of_the_command(capsys, command: str) -> None:
    listed = help_keys(capsys, command)
    assert list(listed) == [key.name for key in command_keys(command)]
    assert listed == {key.name: key.help for key in command_keys(command)}


def test_each_key_has_one_help_line_in_every_command(capsys) -> None:
    lines: dict[str, set[str]] = {}
    for command in COMMANDS:
        for name, text in help_keys(capsys, command).items():
            lines.setdefault(name, set()).add(text)
    assert set(lines) == {key.name for key in KEYS}  # every key is taken by some command
    assert {name: len(texts) for name, texts in lines.items() if len(texts) != 1} == {}
    shared = [key.name for key in KEYS if len(key.commands) > 1]
    assert {"batch", "imgsz", "memory_fraction", "memory_budget", "target", "sizes"} <= set(shared)


# One valid command-line value for every key a command takes, and the keyword arguments its function gets.
CALLS = {
    "train": (["batch=auto", "imgsz=64", "memory_budget=1GiB", "trust_checkpoint=True", "augcost=True",
               "labels_per_image=4", "oom_risk=0.01", "plan_cache=False", "oom_retries=2", "remap_classes=True"],
              {"batch": "auto", "imgsz": 64, "memory_budget": "1GiB", "trust_checkpoint": True, "augcost": True,
               "labels_per_image": 4, "oom_risk": 0.01, "plan_cache": False, "oom_retries": 2, "remap_classes": True}),
    "fit": (["batch=0.85", "imgsz=64", "memory_fraction=0.5", "memory_budget=1GiB", "target=t4",
             "trust_checkpoint=True", "labels_per_image=4", "max_probes=3", "oom_risk=0.01", "plan_cache=False",
             "remap_classes=True"],
            {"imgsz": 64, "memory_fraction": 0.5, "memory_budget": "1GiB", "target": "t4", "trust_checkpoint": True,
             "labels_per_image": 4, "max_probes": 3, "oom_risk": 0.01, "plan_cache": False, "save": True,
             "remap_classes": True}),
    "sweep": (["batch=16", "imgsz=96", "sizes=64,128", "memory_fraction=0.5", "memory_budget=1GiB", "target=t4",
               "trust_checkpoint=True", "labels_per_image=4", "oom_risk=0.01", "remap_classes=True"],
              {"batch_size": 16, "imgsz": 96, "sizes": (64, 128), "memory_fraction": 0.5, "memory_budget": "1GiB",
               "target": "t4", "trust_checkpoint": True, "labels_per_image": 4, "oom_risk": 0.01, "save": True,
               "remap_classes": True}),
    "augcost": (["batch=8", "imgsz=64", "sizes=64,128", "trust_checkpoint=True", "seconds=0.5", "pipeline=aug.yaml",
                 "images=8", "repeats=1", "loader_workers=0,2", "loader_cache=False,ram", "step_img_per_s=40",
                 "seed=3", "remap_classes=True"],
                {"batch": 8, "imgsz": 64, "sizes": (64, 128), "trust_checkpoint": True, "seconds": 0.5,
                 "pipeline": "aug.yaml", "images": 8, "repeats": 1, "loader_workers": (0, 2),
                 "loader_cache": "False,ram", "step_img_per_s": 40, "seed": 3,
                 "remap_classes": True}),
    "infer": (["imgsz=64", "memory_fraction=0.5", "memory_budget=1GiB", "target=orin-nano-8gb", "trust_checkpoint=True",
               "seconds=0.5", "backend=onnxruntime", "provider=cpu", "batch_sizes=4", "max_batch=8", "latency_ms=50",
               "streams=2", "fps=25", "half=False", "end_to_end=True", "warmup=0", "runs=5", "max_seconds=9",
               "device=cpu", "threads=1", "name=n", "project=p", "precision=fp32,int8", "data=d.yaml",
               "calib_images=8", "remap_classes=True", "keep_choice=False"],
              {"imgsz": 64, "memory_fraction": 0.5, "memory_budget": "1GiB", "target": "orin-nano-8gb",
               "trust_checkpoint": True, "seconds_per_batch": 0.5, "backend": "onnxruntime", "provider": "cpu",
               "batch_sizes": [4], "max_batch": 8, "latency_ms": 50, "streams": 2, "fps": 25, "half": False,
               "end_to_end": True, "warmup_runs": 0, "runs": 5, "max_seconds": 9, "device": "cpu", "threads": 1,
               "name": "n", "project": "p", "precision": ["fp32", "int8"], "data": "d.yaml", "calib_images": 8,
               "remap_classes": True, "keep_choice": False}),
}


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> dict:
    """Each command's library call records its keyword arguments and stops there (exit 2)."""
    seen: dict = {}

    def stub(*args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise ConfigError("stub reached")

    for target in LIBRARY.values():
        module, _, name = target.rpartition(".")
        monkeypatch.setattr(importlib.import_module(module), name, stub)  # the module, not a same-named export
    return seen


@pytest.mark.parametrize("command", COMMANDS)
def test_every_key_reaches_the_function_as_its_parameter(capsys, stubbed: dict, command: str) -> None:
    argv, expected = CALLS[command]
    assert {token.partition("=")[0] for token in argv} == {key.name for key in command_keys(command)}
    code = main([command, POSITIONAL[command], *argv])
    assert capsys.readouterr().err == f"visionbatch {command}: stub reached\n" and code == 2
    if command in ("infer", "fit", "sweep"):  # the CLI's progress sink on stderr
        expected = {**expected, "progress": stubbed["progress"]}
    assert stubbed == expected


@pytest.mark.parametrize("argv, expected", [
    (["sweep", "batch=auto"], {"memory_fraction": 0.9}),  # the training batch, fitted: as in fit and train
    (["sweep", "batch=-1"], {"memory_fraction": 0.6}),  # Ultralytics' AutoBatch fraction
    (["sweep", "batch=0.7", "memory_fraction=0.5"], {"memory_fraction": 0.5}),  # the explicit key wins, as in fit
    (["fit", "batch=auto"], {"memory_fraction": 0.9}),
    (["sweep", "imgsz=640"], {"imgsz": 640}),  # one size is the training size, not an old spelling
], ids=["sweep-auto", "sweep-minus-1", "sweep-both", "fit-auto", "sweep-one-imgsz"])
def test_batch_means_the_training_batch(capsys, stubbed: dict, argv: list[str], expected: dict) -> None:
    assert main([argv[0], DATA, *argv[1:]]) == 2
    assert capsys.readouterr().err.endswith(": stub reached\n")
    assert {k: v for k, v in stubbed.items() if k not in ("save", "progress")} == expected


def _foreign_keys() -> list:
    """(command, key) for every registry key a command does not take, and that is not Ultralytics' either."""
    ultralytics = set(ultralytics_defaults())
    old = {(o.command, o.old) for o in OLD_SPELLINGS}
    return [pytest.param(command, key.name, id=f"{command}-{key.name}") for command in COMMANDS for key in KEYS
            if command not in key.commands and (command, key.name) not in old
            and (command == "infer" or key.name not in ultralytics)]


@pytest.mark.parametrize("command, key", _foreign_keys())
def test_a_key_of_another_command_is_refused(capsys, workdir: Path, stubbed: dict, command: str, key: str) -> None:
    assert main([command, POSITIONAL[command], f"{key}=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"visionbatch {command}: unknown argument '{key}=1'") and err.count("\n") == 1
    assert stubbed == {}


@pytest.mark.parametrize("old", OLD_SPELLINGS, ids=[f"{o.command}-{o.old}" for o in OLD_SPELLINGS])
def test_old_spelling_is_one_line_naming_the_new_key(capsys, workdir: Path, stubbed: dict, old) -> None:
    code = main([old.command, POSITIONAL[old.command], f"{old.old}=320,640"])
    assert code == 2 and stubbed == {}
    assert capsys.readouterr().err.splitlines() == [
        f"visionbatch {old.command}: {old.old}=320,640: visionbatch {old.command} takes {old.new}=320,640 instead: {old.why}"]


@pytest.mark.parametrize("argv, line", [
    (["infer", "yolo11n.yaml", "batch=1,2,4,8"],
     "visionbatch infer: batch=1,2,4,8: visionbatch infer takes batch_sizes=1,2,4,8 instead: batch= is the training "
     "batch size in every command"),
    (["sweep", DATA, "imgsz=320,640,1024"],
     "visionbatch sweep: imgsz=320,640,1024: visionbatch sweep takes sizes=320,640,1024 instead: imgsz= is one size, "
     "the training size, in every command"),
    (["infer", "yolo11n.yaml", "memory_budget_bytes=1048576"],
     "visionbatch infer: memory_budget_bytes=1048576: visionbatch infer takes memory_budget=1048576 instead: "
     "memory_budget= takes a size (4GiB) or bytes in every command and in Python"),
], ids=["infer-batch", "sweep-imgsz-list", "infer-memory-budget-bytes"])
def test_the_old_spellings_read_exactly(capsys, workdir: Path, argv: list[str], line: str) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert not (workdir / "runs").exists()


def test_old_python_keywords_name_the_new_ones(workdir: Path) -> None:
    from visionbatch.fit.sweep import sweep_resolution
    from visionbatch.infer.tune import tune_inference

    with pytest.raises(ConfigError, match=r"^memory_budget_bytes=1048576: visionbatch infer takes memory_budget=1048576 instead"):
        tune_inference("yolo11n.yaml", memory_budget_bytes=2**20)
    with pytest.raises(TypeError, match="tune_inference\\(\\) got an unexpected keyword argument 'latency'"):
        tune_inference("yolo11n.yaml", latency=100)
    with pytest.raises(ConfigError, match=r"^imgsz=320,640: visionbatch sweep takes sizes=320,640 instead"):
        sweep_resolution(DATA, imgsz=[320, 640], memory_budget="1GiB")
    with pytest.raises(ConfigError, match=r"^sizes=640: a sweep needs two or more sizes"):
        sweep_resolution(DATA, sizes=[640], imgsz=640, memory_budget="1GiB")  # imgsz is one of the sizes
    with pytest.raises(ConfigError, match=r"^imgsz=16: give image sizes in pixels, at least 64"):
        sweep_resolution(DATA, sizes=[640], imgsz=16, memory_budget="1GiB")
    assert not (workdir / "runs").exists()


# -- the unified meanings, exactly ------------------------------------------------------------------------------


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 16 GiB machine with 9 GiB available, this process holding 1 GiB: 10 GiB usable, 6 GiB held by others."""
    monkeypatch.setattr(jetson, "read_meminfo", lambda root=Path("/"): {"MemTotal": 16 * GIB, "MemAvailable": 9 * GIB})
    monkeypatch.setattr(memory, "current_rss_bytes", lambda: GIB)


def _infer_options(**kwargs: object):
    from visionbatch.infer.options import check_options

    return check_options("yolo11n.yaml", device="cpu", **kwargs)


def test_infer_memory_fraction_is_a_share_of_what_this_process_may_use(machine: None) -> None:
    from visionbatch.infer.budget import memory_budget_for

    assert memory_budget_for(_infer_options(memory_fraction=0.5), None) == (
        5 * GIB, "50% of this machine's 10.0 GiB usable (16.0 GiB less 6.00 GiB other processes hold)")
    assert memory_budget_for(_infer_options(), None) == (None, "")  # no fraction, no target: no budget


def test_infer_memory_fraction_on_a_gpu_reads_memory_as_fit_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """fit's budget is memory_fraction x Capacity.usable_bytes from cuda_capacity; infer's is the same."""
    from visionbatch.infer.budget import memory_budget_for

    gpu = Capacity("cuda:0", "Fake GPU", 24 * GIB, 4 * GIB, 300 << 20, 20 * GIB)  # others hold 4 GiB
    monkeypatch.setattr(memory, "cuda_capacity", lambda index: gpu if index == 0 else None)
    opts = dataclasses.replace(_infer_options(memory_fraction=0.25), device="cuda:0")
    assert memory_budget_for(opts, None) == (
        5 * GIB, "25% of Fake GPU's 20.0 GiB usable (24.0 GiB less 4.00 GiB other processes hold)")


def test_infer_memory_fraction_on_a_jetson_leaves_what_the_os_holds(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from visionbatch.infer.budget import memory_budget_for

    monkeypatch.setattr(memory, "current_rss_bytes", lambda: GIB)
    root = make_board(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3767-0005\x00nvidia,tegra234",
                      "# R36 (release), REVISION: 4.3\n", mem_total_kb=8 * 2**20, mem_available_kb=5 * 2**20)
    board = jetson.detect_jetson(root)
    monkeypatch.setattr(jetson, "read_meminfo", partial(jetson.read_meminfo, root))
    assert memory_budget_for(_infer_options(memory_fraction=0.5), board) == (
        3 * GIB, "50% of NVIDIA Jetson Orin Nano Developer Kit's 6.00 GiB usable (8.00 GiB less 2.00 GiB the OS and "
                 "other processes hold)")


@pytest.mark.parametrize("target, fraction, usable, budget, source", [
    ("agx-orin-32gb", 0.5, 30 * GIB, 15 * GIB,
     "50% of Jetson AGX Orin 32GB's 30.0 GiB usable (32.0 GiB less 2.00 GiB the OS keeps)"),
    ("orin-nano-8gb", None, 8 * GIB - 3 * GIB // 2, int(0.9 * (8 * GIB - 3 * GIB // 2)),
     "90% of Jetson Orin Nano 8GB's 6.50 GiB usable (8.00 GiB less 1.50 GiB the OS keeps), the default "
     "memory_fraction"),
    ("t4", None, 16 * GIB, int(0.9 * 16 * GIB), "90% of NVIDIA Tesla T4's 16.0 GiB usable, the default memory_fraction"),
    ("6GiB", 0.5, 6 * GIB, 3 * GIB, "50% of a CUDA GPU with 6GiB's 6.00 GiB usable"),
], ids=["jetson", "jetson-default", "gpu", "size"])
def test_infer_target_is_any_catalog_device_with_fits_usable_memory(machine: None, target: str,
                                                                    fraction: float | None, usable: int, budget: int,
                                                                    source: str) -> None:
    from visionbatch.fit.api import target_capacity
    from visionbatch.infer.budget import memory_budget_for

    opts = _infer_options(target=target, memory_fraction=fraction)
    assert opts.target_memory.usable_bytes == usable == target_capacity(find_target(target))[0].usable_bytes
    assert memory_budget_for(opts, None) == (budget, source)


def test_a_size_is_a_generic_target_in_the_catalog() -> None:
    gpu = find_target("6GiB")
    assert (gpu.key, gpu.total_bytes, gpu.budget_bytes, gpu.amp, gpu.unified) == ("cuda-6gib", 6 * GIB, 6 * GIB, True,
                                                                                 False)


@pytest.mark.parametrize("value", ["4GiB", 4 * GIB, "4096MiB", "4g"])
def test_memory_budget_is_a_size_or_bytes_everywhere(value) -> None:
    from visionbatch.fit.api import FitOptions

    assert _infer_options(memory_budget=value).memory_budget_bytes == 4 * GIB
    assert FitOptions.check(memory_budget=value).memory_budget_bytes == 4 * GIB
    assert read_keys("train", {"memory_budget": value}) == {"memory_budget": value}  # checked, passed as typed


def test_infer_plans_for_a_gpu_target_from_this_machine(workdir: Path,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from visionbatch.infer.tune import tune_inference

    tiny = infer_models.tiny_onnx(tmp_path_factory)
    plan = tune_inference(str(tiny), target="rtx3060", memory_fraction=0.5, batch_sizes=[1, 2], runs=3,
                          warmup_runs=1)
    assert plan.target.key == "rtx3060" and plan.jetson is None
    assert plan.constraints.memory_budget_bytes == 6 * GIB  # half of the RTX 3060's 12 GiB
    assert any(n.startswith("timings are from ") and "not from the NVIDIA GeForce RTX 3060 (12 GB)" in n
               for n in plan.notes)
    assert Path(plan.files["triton_config"]).is_file()  # configs written for the GPU planned for


# -- the registry's own consistency -------------------------------------------------------------------------------


def _signature_default(command: str, parameter: str) -> object:
    module, _, name = LIBRARY[command].rpartition(".")
    found = inspect.signature(getattr(importlib.import_module(module), name)).parameters.get(parameter)
    return None if found is None else found.default


@pytest.mark.parametrize("command", ["fit", "sweep", "augcost", "infer"])
def test_defaults_in_help_are_the_functions_defaults(command: str) -> None:
    checked = 0
    for key in command_keys(command):
        match = (re.search(rf"in {command} \(default ([\d.]+)\)", key.help)
                 or re.search(r"\(default ([\d.]+)[;)]", key.help))
        default = _signature_default(command, key.parameter(command))
        if match is None or default in (None, inspect.Parameter.empty):
            continue
        assert float(match.group(1)) == default, (command, key.name)
        checked += 1
    assert checked >= {"fit": 2, "sweep": 1, "augcost": 4, "infer": 4}[command]


def test_readme_lists_every_key_and_every_changed_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme
    changed = readme[readme.index("### Changed keys"):]
    for old in OLD_SPELLINGS:
        assert re.search(rf"(?<!\w){old.old}=", changed) and re.search(rf"(?<!\w){old.new}=", changed), old


def test_memory_budget_stands_in_for_the_device_and_the_fraction_applies_to_it(machine: None) -> None:
    """As in fit (memory_fraction x the budget), infer aims at a share of memory_budget=, 0.9 by default."""
    from visionbatch.infer.budget import memory_budget_for

    assert memory_budget_for(_infer_options(memory_budget="1GiB"), None) == (
        int(0.9 * GIB), "90% of memory_budget=1.00GiB")
    assert memory_budget_for(_infer_options(memory_budget="1GiB", memory_fraction=0.5), None) == (
        GIB // 2, "50% of memory_budget=1.00GiB")


def test_batch_keeps_its_meaning_from_python_too(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fit_batch and sweep_resolution read batch= as the CLI does, before any data is read; nothing is dropped."""
    from visionbatch.fit import api
    from visionbatch.fit.api import fit_batch
    from visionbatch.fit.sweep import sweep_resolution

    monkeypatch.setattr(api, "fit_job", lambda job, options, progress=None: options)  # stop at the checked options
    assert fit_batch(DATA, batch=0.5, memory_budget="1GiB").memory_fraction == 0.5
    assert fit_batch(DATA, batch=-1, memory_budget="1GiB").memory_fraction == 0.6  # Ultralytics' AutoBatch aim
    assert fit_batch(DATA, batch=16, memory_budget="1GiB").batch_size == 16  # a size asks whether it fits
    monkeypatch.undo()

    with pytest.raises(ConfigError, match=r"^batch=16 and batch_size=8 disagree: give one of them"):
        fit_batch(DATA, batch=16, batch_size=8)
    with pytest.raises(ConfigError, match=r"^memory_fraction=1.5 is out of range"):
        fit_batch(DATA, memory_fraction=1.5)
    with pytest.raises(ConfigError, match=r"^batch=0 is impossible"):
        sweep_resolution(DATA, batch=0, sizes=[64, 128], target="t4")
    with pytest.raises(ConfigError, match=r"^device=cpu with target=t4: a prediction runs on this CPU"):
        sweep_resolution(DATA, sizes=[64, 128], target="t4", device="cpu")  # as fit refuses it
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("typed, meant", [("lr", "lr0"), ("learning_rate", "lr0"), ("img_size", "imgsz"),
                                          ("num_workers", "workers"), ("lrr", "lrf")])
def test_a_name_other_tools_use_suggests_what_it_means_here(typed: str, meant: str) -> None:
    """`lr` is closest in letters to `lrf` (the final learning-rate fraction) but means `lr0`."""
    from visionbatch.keys import check_keys
    from visionbatch.ultralytics.args import ultralytics_defaults

    with pytest.raises(ConfigError) as info:
        check_keys({typed: 1}, set(ultralytics_defaults()), "train")
    assert str(info.value).startswith(f"unknown argument '{typed}=1' (did you mean '{meant}'?): ")
