"""Hostile and unlucky input: nothing a user hands us runs code, the user's files are never written, the caller's
process is given back as it was, and every failure (bad file, full disk, SIGTERM) ends cleanly in one line.

Each threat is first shown to be real where that is cheap (Ultralytics itself runs the `download:` of the same
YAML), so a pass means visionbatch closed it, not that the fixture was harmless.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_shapes, tree_digest

from visionbatch.cli import main
from visionbatch.staging import staged_dataset
from visionbatch.ultralytics.job import prepare
from visionbatch.ultralytics.models import inspect_checkpoint
from visionbatch.ultralytics.offline import offline


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The line a failure ends with (after any progress lines); fails on a traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("visionbatch "), err[-3000:]
    return lines[-1]


# -- data.yaml: download: never runs, whatever the paths say --------------------------------------------------


def _download_yaml(kind: str, home: Path, marker: Path) -> Path:
    """A dataset under `home/ds` whose data.yaml makes Ultralytics run `download:`; returns the YAML."""
    data = copy_shapes(home / "ds")
    python = f"download: \"open('{marker}', 'w').close()\"\n"
    if kind == "tilde-path":  # Ultralytics does not expand ~, so the split looks missing
        text = f"path: ~/ds\ntrain: images/train\nval: images/val\nnames: [a, b, c, d, e]\n{python}"
    elif kind == "list-entry":  # Ultralytics' '../' fallback applies to plain strings only
        text = f"train: images/train\nval: [../images/val]\nnames: [a, b, c, d, e]\n{python}"
    else:  # 'tilde-bash': path: ~ and a shell line
        script = home / "evil.sh"
        script.write_text(f"#!/bin/sh\ntouch {marker}\n")
        text = f"path: '~'\ntrain: ds/images/train\nval: ds/images/val\nnames: [a, b, c, d, e]\ndownload: bash {script}\n"
    data.write_text(text)
    return data


@pytest.mark.parametrize("kind", ["tilde-path", "list-entry", "tilde-bash"])
def test_download_never_runs(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, marker = tmp_path / "home", tmp_path / "pwned"
    monkeypatch.setenv("HOME", str(home))
    data = _download_yaml(kind, home, marker)
    with offline():
        import ultralytics.data.utils
        from ultralytics.data.utils import check_det_dataset

        monkeypatch.setattr(ultralytics.data.utils, "DATASETS_DIR", tmp_path / "datasets")
        with contextlib.suppress(Exception):  # the threat is real: Ultralytics on the user's YAML runs download:
            check_det_dataset(str(data))
        assert marker.exists()
        marker.unlink()
        job = prepare(data, {"imgsz": 64})
        assert any("download: is ignored" in note for note in job.notes)
        with staged_dataset(job.dataset) as staged:
            resolved = check_det_dataset(str(staged.yaml_path))  # what the trainer calls
    assert not marker.exists()
    assert "download" not in staged.content and "download" not in resolved
    assert all(Path(resolved[k]).is_file() for k in ("train", "val"))  # a list of links in the mirror
    linked = [Path(line) for line in Path(resolved["val"]).read_text().splitlines()]
    assert all(p.is_relative_to(resolved["path"]) for p in linked)
    assert sorted(p.resolve() for p in linked) == sorted((home / "ds" / "images" / "val").resolve().iterdir())


@pytest.mark.slow
def test_train_with_download_key_trains_and_says_it_is_ignored(tmp_path: Path, workdir: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    home, marker = tmp_path / "home", tmp_path / "pwned"
    monkeypatch.setenv("HOME", str(home))
    data = _download_yaml("list-entry", home, marker)
    before = tree_digest(home / "ds")
    code, out, err = run_cli(capsys, "train", str(data), "epochs=1", "imgsz=64", "batch=4", "plots=False",
                             "cache=disk")
    assert code == 0, err[-3000:]
    assert not marker.exists()
    assert tree_digest(home / "ds") == before  # no label cache, no .npy beside the images (cache=disk)
    save_dir = workdir / "runs" / "detect" / "train"
    summary = json.loads((save_dir / "visionbatch.json").read_text())
    assert any("download: is ignored" in note for note in summary["notes"])  # also in the log's header
    resolved = yaml.safe_load((save_dir / "data.resolved.yaml").read_text())
    assert "download" not in resolved
    assert list(Path(resolved["path"]).rglob("*.npy"))  # cache=disk wrote into the mirror, not the dataset
    assert inspect_checkpoint(save_dir / "weights" / "best.pt") == "detect"  # our own checkpoints load safely


@pytest.mark.slow
def test_fit_and_sweep_leave_the_dataset_as_it_was(small_shapes: Path, workdir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """(train and augcost are hashed in test_training.py, test_augment.py and above.)"""
    before = tree_digest(small_shapes.parent)
    code, _, err = run_cli(capsys, "fit", str(small_shapes), "imgsz=64", "memory_budget=8GiB")
    assert code == 0, err[-3000:]
    code, _, err = run_cli(capsys, "sweep", str(small_shapes), "sizes=64,128", "memory_budget=8GiB")
    assert code == 0, err[-3000:]
    assert tree_digest(small_shapes.parent) == before


def test_split_without_its_key_is_refused(small_shapes: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "train", str(small_shapes), "split=test")
    assert code == 2
    assert "split=test but" in one_line(err) and "has no 'test:' key" in err
    assert not (workdir / "runs").exists()


def test_split_test_is_checked_and_staged(small_shapes: Path, capsys: pytest.CaptureFixture) -> None:
    small_shapes.write_text(small_shapes.read_text() + "test: images/missing\n")
    code, _, err = run_cli(capsys, "train", str(small_shapes), "split=test")
    assert code == 2 and "'test: images/missing' not found" in one_line(err)
    small_shapes.write_text(small_shapes.read_text().replace("images/missing", "images/val"))
    job = prepare(small_shapes, {"split": "test"})
    assert job.dataset.test is not None and job.dataset.test.images == 4
    with staged_dataset(job.dataset) as staged:
        assert len(Path(staged.content["test"]).read_text().splitlines()) == 4


# -- data.yaml: bounded before it is built ---------------------------------------------------------------------

BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

HOSTILE_YAML = [
    ("alias-bomb", "train: images/train\nval: images/val\n" + BOMB + "names: *i\n", "aliases are expanded"),
    ("alias-cycle", "train: images/train\nval: images/val\nnames: &n [a, *n]\n", "cycle"),
    ("deep", "train: images/train\nval: images/val\nnames: " + "[" * 3000 + "]" * 3000 + "\n", "nested"),
    ("nested-name", "train: images/train\nval: images/val\nnames: [[a, b], c]\n", "class 0 in names is a list"),
    ("huge-nc", "train: images/train\nval: images/val\nnc: 1000000000000\n", "must be a whole number from 1 to 20000"),
    ("huge-id", "train: images/train\nval: images/val\nnames: {0: a, 1000000000000: b}\n", "missing 1"),
    ("bool-id", "train: images/train\nval: images/val\nnames: {0: a, true: b}\n", "is not an integer"),
    ("list-of-maps", "train: [{a: 1}]\nval: images/val\nnames: [a]\n", "must be a path or a list of paths"),
]


@pytest.mark.parametrize("name,text,expected", HOSTILE_YAML, ids=[c[0] for c in HOSTILE_YAML])
def test_hostile_data_yaml_is_one_line(name: str, text: str, expected: str, small_shapes: Path, workdir: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    small_shapes.write_text(text)
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2
    assert expected in one_line(err)
    assert not (workdir / "runs").exists()


def test_oversized_data_yaml_is_refused_unread(small_shapes: Path, capsys: pytest.CaptureFixture) -> None:
    with open(small_shapes, "a") as fh:
        fh.write("# " + "x" * (9 * 2**20) + "\n")
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and "too large for a YAML configuration" in one_line(err)


def test_hostile_model_yaml_is_one_line(small_shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "bomb-model.yaml"
    model.write_text(BOMB + "backbone: *i\nhead: []\n")
    code, _, err = run_cli(capsys, "fit", str(small_shapes), f"model={model}", "memory_budget=1GiB")
    assert code == 2 and "aliases are expanded" in one_line(err)
    # an activation: string would be eval()'d by Ultralytics' unrestricted model builder
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil-model.yaml"
    with offline():
        from ultralytics.utils.checks import check_yaml

        text = Path(check_yaml("yolo11.yaml")).read_text()
    evil.write_text(text + f"\nactivation: __import__('pathlib').Path('{marker}').touch()\n")
    code, _, err = run_cli(capsys, "fit", str(small_shapes), f"model={evil}", "memory_budget=1GiB", "imgsz=64")
    assert not marker.exists()
    assert code == 2 and "unsupported activation" in one_line(err) and "trust_checkpoint=True" in err


# -- checkpoints: loaded safely unless trusted -------------------------------------------------------------------

CHECKPOINTS = textwrap.dedent(
    """
    import os, sys, types, torch

    folder, marker = sys.argv[1], sys.argv[2]

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, f"{folder}/evil.pt")
    with open(f"{folder}/random.pt", "wb") as fh:
        fh.write(os.urandom(4096))
    with open(f"{folder}/text.pt", "w") as fh:
        fh.write("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, f"{folder}/state-dict.pt")
    module = types.ModuleType("visionbatch_absent_module")
    Absent = type("Absent", (), {"__module__": "visionbatch_absent_module"})
    module.Absent = Absent
    sys.modules["visionbatch_absent_module"] = module
    torch.save({"model": Absent()}, f"{folder}/absent-module.pt")
    """
)

BAD_CHECKPOINTS = [
    ("evil", "refused by the safe loader", "trust_checkpoint=True"),
    ("random", "is not a PyTorch checkpoint", ""),
    ("text", "is not a PyTorch checkpoint", ""),
    ("state-dict", "holds no model", ""),
    ("absent-module", "refused by the safe loader", ""),
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder of hostile .pt files, marker file the malicious one would create)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    marker = folder / "pwned"
    subprocess.run([sys.executable, "-c", CHECKPOINTS, str(folder), str(marker)], check=True, timeout=120)
    return folder, marker


@pytest.mark.parametrize("command,extra", [("train", []), ("fit", ["memory_budget=1GiB"]),
                                           ("sweep", ["memory_budget=1GiB", "sizes=64,128"]),
                                           ("augcost", ["imgsz=64", "batch=2"]), ("infer", ["imgsz=64"])])
@pytest.mark.parametrize("stem,expected,hint", BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_one_line_and_runs_nothing(command: str, extra: list[str], stem: str, expected: str,
                                                     hint: str, checkpoints: tuple[Path, Path], small_shapes: Path,
                                                     workdir: Path, capsys: pytest.CaptureFixture) -> None:
    folder, marker = checkpoints
    data = [] if command == "infer" else [str(small_shapes)]
    model = f"{folder / stem}.pt"
    code, _, err = run_cli(capsys, command, *data, *([model] if command == "infer" else [f"model={model}"]), *extra)
    line = one_line(err)
    assert code == 2 and expected in line and hint in line
    assert not marker.exists()
    assert not (workdir / "runs").exists()  # refused before any run folder


def test_trusting_a_checkpoint_installs_nothing(checkpoints: tuple[Path, Path], small_shapes: Path, workdir: Path,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_checkpoint=True loads unrestricted, but a module the file names is never pip-installed."""
    folder, _ = checkpoints
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a))
    code, _, err = run_cli(capsys, "train", str(small_shapes), f"model={folder}/absent-module.pt",
                           "trust_checkpoint=True")
    assert code == 2 and "needs the Python module 'visionbatch_absent_module'" in one_line(err)
    assert calls == []


def test_trust_checkpoint_is_a_switch(small_shapes: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "train", str(small_shapes), "trust_checkpoint=yes")
    assert code == 2 and "trust_checkpoint=yes is not a switch" in one_line(err)


# -- a full disk: one line, nothing half-written --------------------------------------------------------------


def _private_tmpfs_works() -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _private_tmpfs_works(),
                                 reason="no private mount namespace here (unshare -rm) for a small tmpfs")


def _on_small_disk(folder: Path, argv: list[str], size: str = "5m", cwd: Path | None = None
                   ) -> subprocess.CompletedProcess:
    """Run `python -m visionbatch argv` with `folder` on a private tmpfs of `size`; the files are copied out."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = folder.parent / f"{folder.name}-contents"
    script = (f'mount -t tmpfs -o size={size} tmpfs "{folder}" && "{sys.executable}" -m visionbatch "$@"; '
              f'code=$?; cp -a "{folder}/." "{keep}/" 2>/dev/null; exit $code')
    keep.mkdir()
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *argv], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.mark.slow
@needs_tmpfs
def test_full_disk_during_training(small_shapes: Path, tmp_path: Path) -> None:
    runs = tmp_path / "small"
    proc = _on_small_disk(runs, ["train", str(small_shapes), "epochs=2", "imgsz=64", "batch=4", f"project={runs}",
                                 "name=full"])
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert f"no space left on the device of {runs}" in one_line(proc.stderr)
    written = tmp_path / "small-contents" / "full"
    assert not list(written.rglob("*.partial"))  # nothing half-written left behind
    for checkpoint in written.rglob("*.pt"):  # a checkpoint that is there is whole
        assert inspect_checkpoint(checkpoint) == "detect"
    summary = written / "visionbatch.json"
    if summary.exists():  # room freed by the removed partial checkpoint: the summary says what happened
        assert json.loads(summary.read_text())["status"] == "failed"


@pytest.mark.slow
@needs_tmpfs
def test_full_disk_during_an_infer_export(tmp_path: Path) -> None:
    """The ONNX export (~10 MB) cannot fit a 2 MB run folder: one line, and no partial .onnx under any name."""
    runs = tmp_path / "small"
    proc = _on_small_disk(runs, ["infer", "yolo11n.yaml", "imgsz=64", "batch_sizes=1", f"project={runs}", "name=full"],
                          size="2m", cwd=tmp_path)
    assert proc.returncode == 74, proc.stderr[-3000:]
    assert f"no space left on the device of {runs}" in one_line(proc.stderr)
    written = tmp_path / "small-contents"
    assert not list(written.rglob("*.onnx")) and not list(written.rglob("*.partial"))
    assert not list(written.rglob(".export-*"))


@pytest.mark.slow
@needs_tmpfs
def test_a_read_only_dataset_trains_with_cache_disk(small_shapes: Path, tmp_path: Path) -> None:
    """Mounted read-only (a private bind mount): Ultralytics' label caches and .npy files go to the mirror."""
    folder = small_shapes.parent
    before = tree_digest(folder)
    script = (f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" && '
              f'"{sys.executable}" -m visionbatch "$@"')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", "train", str(small_shapes), "epochs=1",
                           "imgsz=64", "batch=4", "plots=False", "cache=disk"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree_digest(folder) == before


# -- SIGTERM: like Ctrl-C -------------------------------------------------------------------------------------


def _start(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "visionbatch", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s  # a deadline for the test to give up, not a measured figure
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("never reached the point to stop at")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_during_training_records_interrupted(small_shapes: Path, workdir: Path) -> None:
    proc = _start(["train", str(small_shapes), "epochs=50", "imgsz=64", "batch=4", "plots=False"], workdir)
    results = workdir / "runs" / "detect" / "train" / "results.csv"
    # two epochs in results.csv: the first epoch's record is surely in (the CSV is written just before it)
    _wait_for(lambda: results.exists() and len(results.read_text().splitlines()) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "visionbatch train: stopped by SIGTERM" in err and "Traceback" not in err
    summary = json.loads((results.parent / "visionbatch.json").read_text())
    assert summary["status"] == "interrupted" and summary["epochs"]
    assert not list(results.parent.rglob("*.partial"))
    # resume it, from a checkpoint whose own save_dir was turned to point into the dataset: the run goes on in
    # the checkpoint's own folder, and the dataset stays as it was
    import torch

    last = results.parent / "weights" / "last.pt"
    checkpoint = torch.load(last, weights_only=False)
    done = checkpoint["epoch"] + 1
    checkpoint["train_args"].update(save_dir=str(small_shapes.parent), epochs=done + 1)
    torch.save(checkpoint, last)
    before = tree_digest(small_shapes.parent)
    resumed = subprocess.run([sys.executable, "-m", "visionbatch", "train", str(small_shapes), f"resume={last}"],
                             cwd=workdir, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tree_digest(small_shapes.parent) == before
    summary = json.loads((results.parent / "visionbatch.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"][-1]["epoch"] == done + 1


@pytest.mark.slow
def test_sigterm_during_augcost_removes_its_temporary_folder(small_shapes: Path, workdir: Path,
                                                              tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = _start(["augcost", str(small_shapes), "imgsz=64", "batch=2", "seconds=30", "loader_workers=0",
                   "loader_cache=False", "step_img_per_s=100"], workdir, env)
    _wait_for(lambda: any(scratch.glob("visionbatch-augcost-*")), proc)  # mid-run: its temporary folder exists
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-3000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert not list(scratch.glob("visionbatch-*"))  # (torch keeps its own inductor cache there, by design)


def test_entry_ends_a_stopped_run_without_finalizing(monkeypatch, capsys) -> None:
    """After Ctrl-C or SIGTERM the command exits through os._exit (a native thread left running cannot
    abort the interpreter's finalization); other codes go through sys.exit as usual."""
    import visionbatch.cli as cli

    exits: list[int] = []

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise SystemExit(f"os._exit({code})")

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    for code, how in [(cli.EXIT_TERMINATED, "os._exit"), (cli.EXIT_INTERRUPTED, "os._exit"),
                      (cli.EXIT_OK, "sys.exit"), (cli.EXIT_BAD_INPUT, "sys.exit")]:
        monkeypatch.setattr(cli, "main", lambda argv=None, code=code: code)
        with pytest.raises(SystemExit) as stop:
            cli.entry([])
        assert (exits[-1:] == [code]) if how == "os._exit" else (stop.value.code == code), (code, exits)
    assert exits == [cli.EXIT_TERMINATED, cli.EXIT_INTERRUPTED]


FORWARD = textwrap.dedent(
    """
    import os, signal, subprocess, time
    from visionbatch.cli import Terminated, sigterm_as_interrupt

    child = subprocess.Popen(["sleep", "60"], start_new_session=True)  # as torchrun starts DDP workers
    try:
        with sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(60)
    except Terminated:
        print("terminated", child.wait(timeout=60))
    """
)


def test_sigterm_reaches_the_processes_visionbatch_started() -> None:
    proc = subprocess.run([sys.executable, "-c", FORWARD], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["terminated", str(-signal.SIGTERM)], proc.stderr[-2000:]


DDP_WORKER = textwrap.dedent(
    """
    import json
    import visionbatch.ultralytics.trainers as trainers  # what Ultralytics' generated DDP script imports first
    import ultralytics.engine.trainer as engine
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils

    trainers.offline_in_ddp_worker()  # what the trainer's __init__ runs in the worker
    print(json.dumps([engine.check_amp.__module__, utils.ONLINE, tasks.SAFE_LOAD, utils.SETTINGS["sync"]]))
    """
)


def test_a_ddp_worker_is_offline_too(tmp_path: Path) -> None:
    """A DDP rank is a fresh interpreter that inherits only the environment: it enters offline() itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_"))}
    env.update(LOCAL_RANK="0", HOME=str(tmp_path), YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0")
    proc = subprocess.run([sys.executable, "-c", DDP_WORKER], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["visionbatch.ultralytics.offline", False, True, False]


# -- the caller's process is given back --------------------------------------------------------------------------

STATE = textwrap.dedent(
    """
    import json, os, random, sys, warnings
    data, order, verbs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    if order == "ultralytics-first":
        import ultralytics  # the user's own import, before visionbatch
    import cv2, numpy as np, torch

    def snapshot():
        return {"env": dict(os.environ), "cv2": cv2.getNumThreads(), "numpy": repr(np.get_printoptions()),
                "torch": repr(vars(torch._tensor_str.PRINT_OPTS)), "random": random.getstate()[1][:4],
                "numpy_rng": np.random.get_state()[1][:4].tolist(), "torch_rng": torch.get_rng_state()[:16].tolist(),
                "warnings": repr(warnings.filters), "threads": torch.get_num_threads(),
                "deterministic": torch.are_deterministic_algorithms_enabled(),
                "cudnn": [torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark]}

    cv2.setNumThreads(2)
    before = snapshot()
    import visionbatch
    calls = {
        "train": lambda: visionbatch.train(data, epochs=1, imgsz=64, batch=4, plots=False),
        "fit": lambda: visionbatch.fit_batch(data, imgsz=64, memory_budget="8GiB"),
        "sweep": lambda: visionbatch.sweep_resolution(data, sizes=[64, 96], memory_budget="8GiB"),
        "augcost": lambda: visionbatch.profile_augmentation(data, imgsz=64, batch=2, images=4, seconds=0.2,
                                                            loader_workers=[0], loader_cache=[False],
                                                            step_img_per_s=100, progress=None),
        "infer": lambda: visionbatch.tune_inference("yolo11n.yaml", imgsz=64, batch_sizes=[1, 2],
                                                    seconds_per_batch=0.1, max_seconds=5),
    }
    report = {}
    for verb in verbs:
        calls[verb]()
        after = snapshot()
        changed = {k: [before[k], after[k]] for k in before if before[k] != after[k] and k != "env"}
        env = {k: [before["env"].get(k), after["env"].get(k)] for k in set(before["env"]) | set(after["env"])
               if before["env"].get(k) != after["env"].get(k)}
        report[verb] = {"changed": changed, "env": env}
    print(json.dumps(report))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("order,verbs", [("visionbatch-first", "train"),
                                         ("ultralytics-first", "train,fit,sweep,augcost,infer")])
def test_every_verb_gives_the_process_back(order: str, verbs: str, small_shapes: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_", "XDG_", "ORT_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "cache"))
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", STATE, str(small_shapes), order, verbs], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {verb: {"changed": {}, "env": {}} for verb in verbs.split(",")}
    user_config = home / ".config" / "Ultralytics"
    assert not list(user_config.glob("*.ttf"))  # fonts only in visionbatch's own folder
    assert (tmp_path / "cache" / "visionbatch" / "Ultralytics" / "Arial.ttf").is_file()


# -- sizes where BatchNorm cannot train one image: refused up front, not a traceback later ----------------------

TINY_SIZES = [
    (["fit", "imgsz=32", "memory_budget=256MiB"], "imgsz=32: fitting probes batch 1, and below 64 pixels"),
    (["sweep", "sizes=32,64", "memory_budget=256MiB"], "at least 64 (the sweep probes batch 1"),
    (["train", "imgsz=32", "batch=7"], "batch=7 with 8 training images leaves a last batch of 1 image"),
]


@pytest.mark.parametrize("argv,expected", TINY_SIZES, ids=[c[0][0] for c in TINY_SIZES])
def test_sizes_batchnorm_cannot_train_are_one_line(argv: list[str], expected: str, small_shapes: Path,
                                                   workdir: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, argv[0], str(small_shapes), *argv[1:])
    assert code == 2 and expected in one_line(err)
    assert not (workdir / "runs").exists()


# -- arguments that would fetch or load files, and where runs may go --------------------------------------------

def _cases_needing_files(tmp_path: Path, data: Path) -> list[tuple[list[str], str]]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("pretrained: https://example.invalid/x.pt\nepochs: 1\n")
    folder = data.parent
    return [
        (["pretrained=https://example.invalid/x.pt"], "pretrained=https://example.invalid/x.pt: visionbatch never"),
        (["pretrained=yolo11s.pt"], "pretrained=yolo11s.pt: no such file, and visionbatch never downloads"),
        (["resume=nothere/last.pt"], "resume=nothere/last.pt: no such file"),
        (["distill_model=https://example.invalid/t.pt"], "never downloads"),
        ([f"cfg={cfg}"], "pretrained=https://example.invalid/x.pt: visionbatch never downloads"),  # cfg= is checked
        (["cfg=https://example.invalid/c.yaml"], "no such local file (visionbatch never downloads)"),
        (["name=../../escaped"], "name=../../escaped: a run name is one folder name"),
        ([f"project={data}"], "is a file, not a folder"),
        ([f"project={folder / 'images' / 'train'}"], "is inside the dataset's"),
        ([f"project={folder / 'labels' / 'val' / 'runs'}"], "is inside the dataset's"),
    ]


def test_file_arguments_and_run_folders_are_checked(small_shapes: Path, tmp_path: Path, workdir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    before = tree_digest(small_shapes.parent)
    for extra, expected in _cases_needing_files(tmp_path, small_shapes):
        code, _, err = run_cli(capsys, "train", str(small_shapes), *extra)
        assert code == 2 and expected in one_line(err), (extra, err[-2000:])
    assert not (workdir / "runs").exists() and not (tmp_path / "escaped").exists()
    assert tree_digest(small_shapes.parent) == before


def test_cfg_keys_are_defaults_under_the_given_ones(small_shapes: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("epochs: 7\nimgsz: 96\ndata: elsewhere.yaml\n")
    job = prepare(small_shapes, {"cfg": str(cfg), "imgsz": 64})
    assert (job.args["epochs"], job.args["imgsz"], job.args["data"]) == (7, 64, str(small_shapes.resolve()))
    assert any("cfg=" in note and "data: is ignored" in note for note in job.notes)


# -- odd files where data should be -----------------------------------------------------------------------------

def test_odd_files_in_a_dataset_are_one_line(small_shapes: Path, workdir: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    folder = small_shapes.parent
    images, labels = folder / "images" / "train", folder / "labels" / "train"

    def fifo_image() -> None:  # PIL would block on it forever
        os.mkfifo(images / "zz_fifo.jpg")

    def fifo_label() -> None:  # Ultralytics would call the label missing, silently
        shutil.copy(sorted(images.glob("*.jpg"))[0], images / "zz_label.jpg")
        os.mkfifo(labels / "zz_label.txt")

    def loop() -> None:  # images/train/loop -> images: glob('**') would walk forever
        (images / "loop").symlink_to("..")

    for make, expected, made in [(fifo_image, "zz_fifo.jpg: not a regular file", ["zz_fifo.jpg"]),
                                 (fifo_label, "zz_label.txt: not a regular file", ["zz_label.jpg", "zz_label.txt"]),
                                 (loop, "is a link to a folder that contains it (a loop)", ["loop"])]:
        make()
        code, _, err = run_cli(capsys, "train", str(small_shapes))
        assert code == 2 and expected in one_line(err), err[-2000:]
        for name in made:
            for place in (images, labels):
                if os.path.lexists(place / name):
                    (place / name).unlink()
    small_shapes.unlink()
    os.mkfifo(small_shapes)
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and "is not a regular file" in one_line(err)
    assert not (workdir / "runs").exists()


MORE_HOSTILE_YAML = [
    ("duplicate-key", "train: images/train\nval: images/val\nnames: [a, b, c, d, e]\nnames: [a]\n",
     "'names' is given twice (lines 3 and 4): keep one"),
    ("scalar-bomb", "blob: &b '" + "x" * 100_000 + "'\nmore: [" + ", ".join(["*b"] * 700) + "]\n"
     "train: images/train\nval: images/val\nnames: [a, b, c, d, e]\n", "aliases are expanded"),
    ("channels-zero", "train: images/train\nval: images/val\nnames: [a, b, c, d, e]\nchannels: 0\n",
     "'channels: 0' must be a whole number from 1 to 16"),
    ("channels-text", "train: images/train\nval: images/val\nnames: [a, b, c, d, e]\nchannels: abc\n",
     "'channels: abc' must be"),
    ("many-names", "train: images/train\nval: images/val\nnames: [" + ", ".join(["c"] * 20_001) + "]\n",
     "names lists 20001 classes, more than 20000"),
]


@pytest.mark.parametrize("name,text,expected", MORE_HOSTILE_YAML, ids=[c[0] for c in MORE_HOSTILE_YAML])
def test_more_hostile_data_yaml(name: str, text: str, expected: str, small_shapes: Path, workdir: Path,
                                capsys: pytest.CaptureFixture) -> None:
    small_shapes.write_text(text)
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and expected in one_line(err)


def test_zip_bomb_and_torchvision_download_are_refused(small_shapes: Path, tmp_path: Path, workdir: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    import zipfile

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (300 * 2**20))
    code, _, err = run_cli(capsys, "train", str(small_shapes), f"model={bomb}")
    assert code == 2 and "expands to 300 MiB" in one_line(err)
    model = tmp_path / "tv.yaml"  # Ultralytics' TorchVision layer fetches torchvision's pretrained weights
    model.write_text("nc: 5\nbackbone:\n  - [-1, 1, TorchVision, [64, mobilenet_v3_small, DEFAULT, True, 2]]\n"
                     "head:\n  - [-1, 1, Classify, [5]]\n")
    code, _, err = run_cli(capsys, "fit", str(small_shapes), f"model={model}", "memory_budget=1GiB")
    assert code == 2 and "would be downloaded" in one_line(err) and "visionbatch never downloads" in err


PIPELINES = [
    ('["x"]', "Compose lists 'x', not a serialized transform"),
    ('[{"__class_fullname__": "OneOf", "transforms": [7], "p": 1}]', "OneOf lists '7', not a serialized transform"),
    ('[{"__class_fullname__": "FDA", "reference_images": ["/etc/passwd"], "p": 1}]', "FDA reads files the pipeline"),
]


@pytest.mark.parametrize("transforms,expected", PIPELINES, ids=["string", "number-in-oneof", "reads-files"])
def test_hostile_pipeline_files_are_one_line(transforms: str, expected: str, small_shapes: Path, tmp_path: Path,
                                             workdir: Path, capsys: pytest.CaptureFixture) -> None:
    pipeline = tmp_path / "aug.json"
    pipeline.write_text('{"__version__": "2.0.8", "transform": {"__class_fullname__": "Compose", "p": 1.0, '
                        f'"transforms": {transforms}}}}}')
    code, _, err = run_cli(capsys, "augcost", str(small_shapes), f"pipeline={pipeline}", "imgsz=64", "batch=2")
    assert code == 2 and expected in one_line(err)
    assert not (workdir / "runs").exists()


def test_a_decompression_bomb_image_is_one_line(small_shapes: Path, workdir: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    from PIL import Image

    folder = small_shapes.parent
    Image.new("1", (20_000, 20_000)).save(folder / "images" / "train" / "zz_bomb.png")  # ~50 KB, 400 Mpx
    shutil.copy(sorted((folder / "labels" / "train").glob("*.txt"))[0], folder / "labels" / "train" / "zz_bomb.txt")
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and "zz_bomb.png: more pixels than PIL will open" in one_line(err)


def test_runs_never_write_over_a_run_or_into_the_dataset(small_shapes: Path, tmp_path: Path, workdir: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    folder = small_shapes.parent
    previous = workdir / "runs" / "detect" / "train"
    previous.mkdir(parents=True)
    (previous / "results.csv").write_text("a previous run's results\n")
    mine = tmp_path / "mymodels"
    (mine / "weights").mkdir(parents=True)
    (mine / "weights" / "best.pt").write_text("the user's own weights")
    with offline():
        import torch
        from ultralytics.nn.tasks import DetectionModel

        torch.save({"model": DetectionModel("yolo11n.yaml", nc=5, verbose=False), "epoch": 0, "train_args": {}},
                   mine / "last.pt")  # a checkpoint mid-run, but not in a run folder of its own
    cases = [
        (["exist_ok=True"], "exist_ok=True would write over"),
        ([f"project={folder}"], "is inside the dataset's"),
        ([f"model={mine / 'last.pt'}", "resume=True"], "is not in a run folder"),
    ]
    for extra, expected in cases:
        code, _, err = run_cli(capsys, "train", str(small_shapes), *extra)
        assert code == 2 and expected in one_line(err), (extra, err[-2000:])
    assert (previous / "results.csv").read_text() == "a previous run's results\n"
    assert (mine / "weights" / "best.pt").read_text() == "the user's own weights"


BAD_LABELS = [
    ("1 nan 0.5 0.2 0.2\n", "holds nan or inf"),
    ("inf 0.5 0.5 0.2 0.2\n", "holds nan or inf"),
    ("0 " + " ".join(["0.5"] * 200_004) + "\n", "a polygon of 100,002 points, more than 100,000"),
]


@pytest.mark.parametrize("row,expected", BAD_LABELS, ids=["nan", "inf", "huge-polygon"])
def test_bad_label_values_are_one_line(row: str, expected: str, small_shapes: Path, workdir: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    label = sorted((small_shapes.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text(row)
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and f"{label.name} line 1: {expected}" in one_line(err)


def test_class_names_with_control_characters_are_refused(small_shapes: Path, capsys: pytest.CaptureFixture) -> None:
    small_shapes.write_text('train: images/train\nval: images/val\nnames: ["a\\nb", c, d, e, f]\n')
    code, _, err = run_cli(capsys, "train", str(small_shapes))
    assert code == 2 and "class 0's name 'a\\nb' has a control character" in one_line(err)
