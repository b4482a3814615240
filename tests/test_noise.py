"""Ultralytics' log lines reach the user only where they tell something about the user's own run.

augcost's loader runs and infer's export are visionbatch's internal work: Ultralytics' advice for a
training run (cache='ram' is non-deterministic) and its exporter's banner and Netron link are dropped
there. Everything else it says still shows, and its logger is as it was afterwards (training's log).

The lines are read from a handler on Ultralytics' logger: its own handler keeps the stdout it found at
import, which is not the stream a later test captures.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from visionbatch.cli import main
from visionbatch.ultralytics.offline import (
    offline,
    quiet_internal_dataset,
    ultralytics_lines_dropped,
)

RAM_CACHE_ADVICE = "may produce non-deterministic training results"
AUGCOST = ["imgsz=64", "sizes=64,96", "images=4", "repeats=1", "loader_workers=0", "loader_cache=ram",
           "seconds=0.2", "step_img_per_s=40"]


class Lines(logging.Handler):
    """Every line Ultralytics' logger lets through, as its handlers would see it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def ultralytics_lines() -> Iterator[Lines]:
    with offline():
        import ultralytics.utils  # noqa: F401  its import sets up the logger
    lines = Lines()
    logger = logging.getLogger("ultralytics")
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)


def logger_state() -> tuple[int, list]:
    logger = logging.getLogger("ultralytics")
    return logger.level, list(logger.filters)


@pytest.mark.parametrize("quiet", [True, False])
def test_augcost_keeps_the_ram_cache_advice_to_itself(capsys, ultralytics_lines: Lines, small_shapes: Path,
                                                      workdir: Path, monkeypatch: pytest.MonkeyPatch,
                                                      quiet: bool) -> None:
    if not quiet:  # the control: without the helper the line does reach the user, so the other case can fail
        from visionbatch.augment import profile

        monkeypatch.setattr(profile, "quiet_internal_dataset", contextlib.nullcontext)
    before = logger_state()
    code = main(["augcost", str(small_shapes), *AUGCOST, f"name=q{quiet}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cache=ram" in out  # the RAM cache was timed: the advice was due
    assert (RAM_CACHE_ADVICE in ultralytics_lines.text()) is not quiet
    assert logger_state() == before


@pytest.mark.slow
def test_infer_export_logs_no_exporter_banner_and_keeps_the_logger(ultralytics_lines: Lines, tmp_path: Path) -> None:
    from visionbatch.infer.export import export

    before = logger_state()
    path = export("yolo11n.yaml", "onnx", tmp_path / "run", imgsz=64)
    assert path == tmp_path / "run" / "yolo11n.onnx" and path.is_file()
    for line in ("netron.app", "Ultralytics 8", "export success", "Predict:", ".export-"):
        assert line not in ultralytics_lines.text()
    assert logger_state() == before
    with offline():  # what a training run logs afterwards still shows
        from ultralytics.utils import LOGGER

        LOGGER.info("epoch 1/1 after an export")
    assert ultralytics_lines.lines[-1] == "epoch 1/1 after an export"


def test_dropped_lines_are_only_those_named_and_only_inside_the_block(ultralytics_lines: Lines) -> None:
    from ultralytics.utils import LOGGER

    with quiet_internal_dataset():
        LOGGER.warning(f"cache='ram' {RAM_CACHE_ADVICE}. Consider cache='disk'")
        LOGGER.warning("a corrupt image was skipped")
    with ultralytics_lines_dropped("netron"):
        LOGGER.info("Visualize: https://netron.app")
    LOGGER.warning(f"cache='ram' {RAM_CACHE_ADVICE}, in the user's own training")
    assert [line.split("⚠️ ")[-1] for line in ultralytics_lines.lines] == [  # Ultralytics prefixes its warnings
        "a corrupt image was skipped", f"cache='ram' {RAM_CACHE_ADVICE}, in the user's own training"]
    assert logging.getLogger("ultralytics").filters == []
