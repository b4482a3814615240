"""The command line: bad input gets one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tree_digest

from visionbatch import __version__
from visionbatch.cli import main


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _box_labels(folder: Path) -> None:
    for label in (folder / "labels" / "train").glob("*.txt"):
        label.write_text("0 0.5 0.5 0.2 0.2\n")


BAD_ARGS = [
    ("unknown-key", ["epoch=3"], "unknown argument 'epoch=3' (did you mean 'epochs'?)"),
    ("negative-epochs", ["epochs=-1"], "epochs=-1"),
    ("zero-imgsz", ["imgsz=0"], "imgsz=0 is impossible"),
    ("zero-batch", ["batch=0"], "batch=0 is impossible"),
    ("bare-word", ["epochs", "3"], "takes one DATA"),
    ("missing-weights", ["model=yolo11n.pt"], "never downloads weights"),
    ("unknown-model-yaml", ["model=yolo99z.yaml"], "no such model YAML"),
    ("url-model", ["model=https://example.com/m.pt"], "never downloads"),
    ("task-model-mismatch", ["task=segment", "model=yolo11n.yaml"], "is a detect model"),
    ("data-twice", ["data=other.yaml"], "given twice"),
    ("no-cuda", ["device=0"], "no CUDA GPU"),
]


@pytest.mark.parametrize("extra, words", [pytest.param(a, w, id=i) for i, a, w in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(capsys, small_shapes: Path, workdir: Path, extra, words) -> None:
    import torch

    if "device=0" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device 0")
    code, out, err = run_cli(capsys, "train", str(small_shapes), *extra)
    assert code == 2
    assert err.startswith("visionbatch train: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert words in err
    assert not (workdir / "runs").exists()  # refused before anything was written


@pytest.mark.parametrize("change, words", [
    (lambda d: (d / "data.yaml").unlink(), "no such file"),
    (lambda d: next((d / "labels" / "train").glob("*.txt")).write_text("5 0.5 0.5 0.1 0.1\n"),
     "class 5 is outside names"),
    (lambda d: next((d / "images" / "val").glob("*.jpg")).write_bytes(b"\x00" * 100), "corrupt or not an image"),
    (_box_labels, "task=segment needs polygon labels"),
], ids=["missing-yaml", "bad-class", "corrupt-image", "segment-on-boxes"])
def test_bad_dataset_exit_2_and_nothing_changed(capsys, small_shapes: Path, workdir: Path, change, words) -> None:
    change(small_shapes.parent)
    before = tree_digest(small_shapes.parent)
    code, _, err = run_cli(capsys, "train", str(small_shapes), "task=segment", "epochs=1")
    assert code == 2
    assert err.count("\n") == 1 and words in err
    assert tree_digest(small_shapes.parent) == before


def test_missing_data_argument(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "epochs=1")
    assert code == 2 and "needs DATA: visionbatch train path/to/data.yaml" in err


def test_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"visionbatch {__version__}"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "Any Ultralytics train argument works" in capsys.readouterr().out


def test_module_entry_point_and_console_script(small_shapes: Path, tmp_path: Path) -> None:
    """`python -m visionbatch` exits 2 with one line for bad input, in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "visionbatch", "train", str(small_shapes), "imgsz=0"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "visionbatch train: imgsz=0 is impossible: image size must be at least 32 pixels "
        "(the model's largest stride), e.g. imgsz=640"
    ]


@pytest.mark.parametrize("stop, code, words", [("Terminated", 143, "stopped by SIGTERM"),
                                               ("KeyboardInterrupt", 130, "interrupted")])
def test_a_stop_wrapped_by_native_code_is_still_a_clean_stop(capsys, monkeypatch: pytest.MonkeyPatch, stop: str,
                                                             code: int, words: str) -> None:
    """SIGTERM landing inside an import comes back as a RuntimeError whose context is Terminated."""
    import visionbatch.cli as cli
    import visionbatch.cli.fit as fit_command

    def run(tokens: object) -> None:
        try:
            raise getattr(cli, stop, KeyboardInterrupt)()
        except KeyboardInterrupt:
            raise RuntimeError("the import was interrupted") from None  # no __cause__, only __context__

    monkeypatch.setattr(fit_command, "run", run)
    assert main(["fit", "data.yaml"]) == code
    assert capsys.readouterr().err.strip() == f"visionbatch fit: {words}"


@pytest.mark.parametrize("json_mode", [False, True])
def test_stdout_carries_the_result_alone(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
                                         json_mode: bool) -> None:
    """Ultralytics' log lines and progress bars (its caching bars print to stdout) go to stderr in table
    mode too, so `visionbatch augcost ... > report.txt` holds the report and nothing else."""
    import logging

    from ultralytics.utils import LOGGER  # noqa: F401  (sets up Ultralytics' console handler)

    import visionbatch.cli as cli

    def run(tokens):
        logging.getLogger("ultralytics").info("train: Caching images (0.0GB RAM): 47%")
        print("\x1b[Kval: Caching images 100%")  # what a bar writing to sys.stdout leaves
        return {"answer": 42}

    augcost = cli.command("augcost")
    monkeypatch.setattr(augcost, "run", run)
    monkeypatch.setattr(augcost, "show", lambda result: f"the table: {result['answer']}")
    code = main(["augcost", "d.yaml", *(["--json"] if json_mode else [])])
    out, err = capsys.readouterr()
    assert code == 0
    assert out == ('{\n  "answer": 42\n}\n' if json_mode else "the table: 42\n")
    assert "Caching images 100%" in err
