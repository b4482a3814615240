"""Run folders are created fresh and never reused."""

from __future__ import annotations

from pathlib import Path

from visionbatch.rundir import new_run_dir


def test_new_run_dir_increments(workdir: Path) -> None:
    first = new_run_dir("fit")
    second = new_run_dir("fit")
    named = new_run_dir("fit", name="gtx1050")
    assert first == workdir / "runs" / "fit" / "fit"
    assert second == workdir / "runs" / "fit" / "fit-2"
    assert named == workdir / "runs" / "fit" / "gtx1050"
    assert new_run_dir("fit", project="mine") == workdir / "runs" / "fit" / "mine" / "fit"


def test_absolute_project(tmp_path: Path) -> None:
    assert new_run_dir("infer", project=tmp_path / "out") == tmp_path / "out" / "infer"


def test_every_command_numbers_its_runs_as_ultralytics_numbers_training_runs(tmp_path: Path) -> None:
    """`visionbatch train`'s folder is made by Ultralytics (`get_save_dir`); fit, sweep, augcost and infer's by
    `new_run_dir`: the two agree, so runs/detect/train-2 sits beside runs/fit/fit-2."""
    from types import SimpleNamespace

    from visionbatch.ultralytics.offline import offline

    with offline():
        from ultralytics.cfg import get_save_dir

        theirs = []
        for _ in range(3):
            args = SimpleNamespace(project=str(tmp_path / "theirs"), name="train", task="detect", mode="train",
                                   exist_ok=False)
            folder = get_save_dir(args)
            folder.mkdir(parents=True)  # the trainer makes it; the next run then numbers past it
            theirs.append(folder.name)
    ours = [new_run_dir("train", project=tmp_path / "ours").name for _ in range(3)]
    assert ours == theirs == ["train", "train-2", "train-3"]
