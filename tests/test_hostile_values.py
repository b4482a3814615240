"""Hostile numbers on every command: one line naming the key, exit code 2, nothing written, no traceback.

Every numeric or sized argument of every command gets the values that used to escape as
OverflowError or ValueError tracebacks, or to pass and fail later (`memory_budget=1e400`,
`epochs=10**30`, `seed=nan`, `lr0=True`, `freeze=1e30`, `0x10`, ...). Each must be refused before any
heavy work: the steps past the checks are replaced by a guard that fails the test if reached.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from visionbatch.cli import main
from visionbatch.errors import ConfigError
from visionbatch.ultralytics.args import check_train_args

DATA = str(Path(__file__).resolve().parents[1] / "datasets" / "shapes" / "data.yaml")
HUGE = "1" + "0" * 30  # 10**30
# Typed on a command line, none of these is a usable number anywhere.
HOSTILE = ["1e400", "-1e400", "inf", "-inf", "nan", "1e999GiB", HUGE, "True", "[1,2]", "1e", "--5", "0x10", "5GiB",
           "9" * 400]

COMMANDS = {  # command: (arguments that work, {key: values refused besides HOSTILE}, {key: HOSTILE values that are fine})
    "train": ([DATA, "imgsz=64", "epochs=1"], {
        "imgsz": ["0", "-1", "-0.0", "31", "16385", "1.5", "1e30"],
        "batch": ["0", "-2", "-0.0", "1.5", "65537", "1e30"],
        "epochs": ["0", "-1", "-0.0", "1.5", "1e30", "2147483648"],
        "workers": ["-1", "1.5", "1e30"],
        "close_mosaic": ["-1", "1e30"],
        "patience": ["-1", "1e30"],
        "nbs": ["0", "1e30"],
        "seed": ["-1", "1.5", "4294967296"],
        "time": ["0", "-1", "-0.0", "100001"],
        "fraction": ["0", "-1", "1.5", "2147483648", "[0.5,nan]", "[0.5,1e400]"],
        "lr0": ["-1", "1.5"],
        "mosaic": ["-1", "1.5"],
        "multi_scale": ["-1", "1.5"],
        "box": ["-1", "-0.5", "1001"],
        "warmup_epochs": ["-1"],
        "degrees": ["361", "-361"],
        "shear": ["91", "-91"],
        "scale": ["-1", "1.5", "[0.5,1e400]", "[-1,2]", "[True,2]"],
        "freeze": ["-1", "1.5", "1001", "1e30", "[1,-2]", "[1,1e400]"],
        "mask_ratio": ["0", "641", "1e30"],
        "save_period": ["-" + HUGE],
    }, {"fraction": ["[1,2]"], "freeze": ["[1,2]"], "scale": ["[1,2]"]}),
    "fit": ([DATA, "imgsz=64", "memory_budget=256MiB"], {
        "memory_budget": ["0", "-1", "0GiB", "-5GiB", "0.5", "1e-400", "2000TiB", "1e308GiB", "1e30"],
        "memory_fraction": ["0", "-0.5", "1.5", "-0.0"],
        "labels_per_image": ["0", "-1", "1.5", "100001", "1e30"],
        "max_probes": ["0", "1", "-1", "1.5", "1e30"],
        "target": ["0GiB", "2000TiB", "1e308GiB", "1e400GiB", "0"],
        "batch": ["0", "1.5"],
        "imgsz": ["0", "16385"],
        "epochs": ["0"],
    }, {"memory_budget": ["5GiB"], "target": ["5GiB"]}),
    "sweep": ([DATA, "sizes=320,640", "memory_budget=256MiB"], {
        "sizes": ["320", "0,640", "320,16385", "320,1e400", "320,nan", "320,1.5"],
        "imgsz": ["0", "16385", "0,640", "320,640"],  # one size, the training size; lists are sizes= now
        "batch": ["0", "1.5", "65537"],
        "memory_budget": ["0", "-5GiB", "2000TiB", "1e308GiB"],
        "memory_fraction": ["0", "1.5"],
        "labels_per_image": ["0", "-1", "1.5", "1e30"],
        "target": ["0GiB", "2000TiB", "1e400GiB"],
        "epochs": ["0"],
    }, {"memory_budget": ["5GiB"], "target": ["5GiB"]}),
    "augcost": ([DATA, "imgsz=64"], {
        "sizes": ["0", "16", "16385", "320,1e400", "320,nan", "320,--5"],
        "images": ["0", "1", "-1", "10001", "1.5"],
        "repeats": ["0", "21", "1.5"],
        "seconds": ["0", "-1", "-0.0", "601"],
        "loader_workers": ["-1", "0,-1", "1.5", "0,1e400"],
        "step_img_per_s": ["0", "-1", "-0.0", "1e8"],
        "seed": ["-1", "1.5", "4294967296"],
        "imgsz": ["0", "16385"],
        "batch": ["0", "65537"],
        "workers": ["-1"],
        "fraction": ["0", "1.5"],
    }, {"loader_workers": ["[1,2]"], "fraction": ["[1,2]"]}),
    "infer": (["yolo11n.yaml", "device=cpu"], {
        "imgsz": ["0", "16", "-0.0", "16416", "1e30"],
        "batch_sizes": ["0", "-1", "1.5", "1,1e400", "1,nan", "65537"],
        "batch": ["1,2", "16"],  # infer's old spelling of batch_sizes
        "max_batch": ["0", "-1", "65537", "1e30"],
        "latency_ms": ["0", "-1", "-0.0", "1e30"],
        "memory_budget": ["0", "-5GiB", "2000TiB", "1e308GiB"],
        "memory_fraction": ["0", "1.5"],
        "target": ["0GiB", "2000TiB", "1e400GiB", "orin-nano-16gb"],
        "streams@fps=25": ["0", "-1", "1.5"],
        "fps@streams=4": ["0", "-1", "-0.0", "1e-310", "1e7"],
        "warmup": ["-1", "1.5", "100001"],
        "runs": ["0", "-1", "100001"],
        "seconds": ["0", "-1", "601"],
        "max_seconds": ["0", "-1", "1e6"],
        "threads": ["0", "-1", "1.5", "100000"],
    }, {"batch_sizes": ["[1,2]"], "memory_budget": ["5GiB"], "target": ["5GiB"]}),
}


def _cases() -> list:
    cases = []
    for command, (base, keys, fine) in COMMANDS.items():
        for spec, extra in keys.items():
            key = spec.partition("@")[0]
            for value in [v for v in HOSTILE if v not in fine.get(key, ())] + extra:
                label = value if len(value) <= 20 else f"{value[:4]}..{len(value)}"
                cases.append(pytest.param(command, spec, value, id=f"{command}-{key}={label}"))
    return cases


@pytest.fixture(scope="module", autouse=True)
def _ultralytics_imported() -> None:
    """Import Ultralytics before capturing: a fresh settings folder prints a line on stdout at first import."""
    from visionbatch.ultralytics.args import ultralytics_defaults

    ultralytics_defaults()


@pytest.fixture
def no_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first step past each command's checks fails the test: a refusal must come before it."""
    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the value was accepted: the command went on to real work")

    for target in ("visionbatch.train.run.run", "visionbatch.ultralytics.spec.job_spec", "visionbatch.infer.tune._ready_model",
                   "visionbatch.augment.profile.link_sample"):
        module, _, name = target.rpartition(".")  # the module itself: `visionbatch.train` is also a function's name
        monkeypatch.setattr(importlib.import_module(module), name, reached, raising=False)


@pytest.mark.parametrize("command, spec, value", _cases())
def test_hostile_value_is_one_line_exit_2(capsys, workdir: Path, no_heavy_work: None, command: str, spec: str,
                                          value: str) -> None:
    key, _, partner = spec.partition("@")
    base = COMMANDS[command][0]
    argv = [a for a in base if not a.startswith(f"{key}=")] + [f"{key}={value}"] + ([partner] if partner else [])
    if command == "train" and key == "memory_budget":
        argv.append("batch=auto")
    code = main([command, *argv])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"visionbatch {command}: "), err
    assert f"{key}=" in lines[0]
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("value", ["1e400", "1e999GiB", "-1e400", HUGE])
def test_train_memory_budget_with_batch_auto(capsys, workdir: Path, no_heavy_work: None, value: str) -> None:
    code = main(["train", DATA, "imgsz=64", "batch=auto", f"memory_budget={value}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "memory_budget=" in err
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("argv, message", [
    (["fit", DATA, "memory_budget=1e400"],
     "visionbatch fit: memory_budget=1e400 is not a finite memory size: use e.g. memory_budget=4GiB or "
     "memory_budget=512MiB"),
    (["fit", DATA, "memory_budget=1e999GiB"],
     "visionbatch fit: memory_budget=1e999GiB is not a finite memory size: use e.g. memory_budget=4GiB or "
     "memory_budget=512MiB"),
    (["infer", "yolo11n.yaml", "device=cpu", "memory_budget=1e400"],
     "visionbatch infer: memory_budget=1e400 is not a finite memory size: use e.g. memory_budget=4GiB or "
     "memory_budget=512MiB"),
    (["fit", DATA, f"memory_budget={HUGE}"],
     "visionbatch fit: memory_budget=1000000000000000000000000000000 is impossible: more memory than any machine "
     "has (at most 1024TiB), e.g. memory_budget=4GiB"),
    (["fit", DATA, "target=1e400GiB"],
     "visionbatch fit: target=1e400GiB is not a finite memory size: use e.g. target=4GiB or target=512MiB"),
    (["train", DATA, "epochs=1e400"],
     "visionbatch train: epochs=1e400 is not a finite number: use an integer >= 1, e.g. epochs=100"),
    (["train", DATA, f"epochs={HUGE}"],
     "visionbatch train: epochs=1000000000000000000000000000000 is impossible: use an integer from 1 to 2147483647, "
     "e.g. epochs=100"),
    (["train", DATA, "lr0=nan"],
     "visionbatch train: lr0=nan is not a finite number: use a number from 0 to 1, e.g. lr0=0.01"),
    (["train", DATA, "imgsz=1e400"],
     "visionbatch train: imgsz=1e400 is not an image size: training uses one integer size in pixels, e.g. imgsz=640"),
    (["train", DATA, "batch=0x10"],
     "visionbatch train: batch=0x10 is not a batch size: use an integer (batch=16), batch=auto, or a fraction (0.85)"),
    (["infer", "yolo11n.yaml", "device=cpu", "latency_ms=inf"],
     "visionbatch infer: latency_ms=inf is not a finite number: give the per-frame latency budget in milliseconds, "
     "e.g. latency_ms=50 (above 0, at most 1000000)"),
    (["augcost", DATA, "seed=nan"],
     "visionbatch augcost: seed=nan is not a finite number: use an integer from 0 to 4294967295, e.g. seed=0"),
], ids=["fit-budget-1e400", "fit-budget-1e999GiB", "infer-budget-1e400", "fit-budget-huge", "fit-target-1e400GiB",
        "train-epochs-1e400", "train-epochs-huge", "train-lr0-nan", "train-imgsz-1e400", "train-batch-hex",
        "infer-latency-inf", "augcost-seed-nan"])
def test_the_reported_cases_read_as_one_exact_line(capsys, workdir: Path, no_heavy_work: None, argv: list[str],
                                                   message: str) -> None:
    """Issue 9, item 8: the OverflowError tracebacks, and their neighbours, as the user now sees them."""
    code = main(argv)
    assert code == 2
    assert capsys.readouterr().err.splitlines() == [message]
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("args, words", [
    ({"epochs": float("inf")}, "epochs=inf is not a finite number"),
    ({"epochs": True}, "epochs=True is not a whole number"),
    ({"epochs": 10**30}, "epochs=1000000000000000000000000000000 is impossible"),
    ({"lr0": float("nan")}, "lr0=nan is not a finite number"),
    ({"box": float("inf")}, "box=inf is not a finite number: use a number from 0 to 1000, e.g. box=7.5"),
    ({"box": -1}, "box=-1 is impossible: use a number from 0 to 1000, e.g. box=7.5"),
    ({"degrees": float("-inf")}, "degrees=-inf is not a finite number: use a number from -360 to 360, e.g. degrees=0.0"),
    ({"time": float("inf")}, "time=inf is not a finite number: time is the training budget in hours, above 0 and "
                             "at most 100000, e.g. time=0.5"),
    ({"seed": 2**32}, "seed=4294967296 is impossible: use an integer from 0 to 4294967295, e.g. seed=0"),
    ({"freeze": 10**30}, "freeze=1000000000000000000000000000000 is impossible"),
    ({"freeze": "all"}, "freeze=all is not a whole number"),
    ({"mosaic": True}, "mosaic=True is not a number: use a number from 0 to 1, e.g. mosaic=1.0"),
    ({"fraction": 10**30}, "fraction=1000000000000000000000000000000 is impossible"),
    ({"scale": (0.5, float("inf"))}, "scale=inf is not a finite number"),
    ({"mask_ratio": 1000, "imgsz": 320}, "mask_ratio=1000 is impossible: masks are imgsz / mask_ratio pixels: "
                                         "use an integer from 1 to imgsz (320), e.g. mask_ratio=4"),
    ({"workers": 10**400}, "workers=10000000000000000000...(401 characters) is impossible"),
])
def test_ultralytics_keys_check_cfg_lets_through(args: dict, words: str) -> None:
    """What survives Ultralytics' check_cfg and fails (or misleads) later is refused here, in one line."""
    with pytest.raises(ConfigError) as info:
        check_train_args(args)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_valid_edges_still_pass() -> None:
    args = {"seed": 2**32 - 1, "epochs": 2**31 - 1, "save_period": -1, "degrees": -10.0, "box": 0, "time": 0.5,
            "scale": (0.5, 1.5), "fraction": 1, "imgsz": 16384, "workers": 0, "mask_ratio": 4}
    assert check_train_args(args) == {**args, "fraction": 1.0}
    assert check_train_args({"freeze": (0, 2)})["freeze"] == [0, 2]  # the list Ultralytics' trainer reads
    assert check_train_args({"fraction": (0.5, 0.5)})["fraction"] == [0.5, 0.5]  # check_cfg refuses a tuple


def test_infer_edges_still_pass(workdir: Path) -> None:
    from visionbatch.infer.options import check_options
    from visionbatch.ultralytics.offline import cpu_count

    opts = check_options("yolo11n.yaml", device="cpu", imgsz=16384, batch_sizes=[1, 65536], latency_ms=1e6,
                         streams=2**31 - 1, fps=0.001, warmup_runs=0, runs=100_000, seconds_per_batch=600,
                         threads=cpu_count(), memory_budget="1024TiB")
    assert (opts.imgsz, opts.batch_sizes, opts.fps, opts.threads) == (16384, (1, 65536), 0.001, cpu_count())
    assert opts.memory_budget_bytes == 2**50
