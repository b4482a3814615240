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
