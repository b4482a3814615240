"""visionbatch.ultralytics.trainers: checkpoints whole or absent, whatever happens while they are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionbatch.ultralytics.offline import offline


@pytest.fixture(scope="module")
def trainers():
    with offline():
        import visionbatch.ultralytics.trainers as module
    return module


def test_strip_writes_a_temporary_file_then_renames(trainers, tmp_path: Path) -> None:
    best = tmp_path / "best.pt"
    best.write_bytes(b"the last whole checkpoint")
    seen = []

    def strip(f, s="", updates=None):
        seen.append(Path(s))
        Path(s).write_bytes(b"stripped")
        return {"ok": True}

    assert trainers.atomic_strip_optimizer(strip, best) == {"ok": True}
    assert best.read_bytes() == b"stripped"
    assert seen[0] != best and seen[0].parent == best.parent and not seen[0].exists()


def test_a_strip_that_fails_leaves_the_old_checkpoint(trainers, tmp_path: Path) -> None:
    best = tmp_path / "best.pt"
    best.write_bytes(b"the last whole checkpoint")

    def strip(f, s="", updates=None):
        Path(s).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        trainers.atomic_strip_optimizer(strip, best)
    assert best.read_bytes() == b"the last whole checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_a_strip_that_writes_nothing_is_not_an_error(trainers, tmp_path: Path) -> None:
    """Ultralytics' strip_optimizer returns {} without writing for a checkpoint with no model."""
    best = tmp_path / "best.pt"
    best.write_bytes(b"kept")
    assert trainers.atomic_strip_optimizer(lambda f, s="", updates=None: {}, best) == {}
    assert best.read_bytes() == b"kept"


def test_save_model_renames_and_copies_the_epoch_checkpoint(trainers, tmp_path: Path) -> None:
    """save_model() with Ultralytics' own writing replaced: what lands under the real names, and when."""

    class Base:
        def save_model(self):
            self.last.write_bytes(b"checkpoint")
            self.best.write_bytes(b"checkpoint")
            assert self.save_period == -1  # the epoch copy is the mixin's, from the whole last.pt
            return True

    class Trainer(trainers.AtomicCheckpoints, Base):
        def __init__(self):  # no Ultralytics set-up: only the attributes save_model uses
            self.wdir = tmp_path / "weights"
            self.wdir.mkdir()
            self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
            self.save_period, self.epoch = 2, 4

    trainer = Trainer()
    assert trainer.save_model() is True
    assert sorted(p.name for p in trainer.wdir.iterdir()) == ["best.pt", "epoch4.pt", "last.pt"]
    assert (trainer.last, trainer.save_period) == (trainer.wdir / "last.pt", 2)


def test_the_stripped_checkpoint_is_named_as_itself_not_its_temporary_file(tmp_path: Path) -> None:
    # Ultralytics logs "Optimizer stripped from last.pt, saved as <s>,": <s> is visionbatch's temporary name
    import io
    import logging

    from ultralytics.utils import LOGGER

    from visionbatch.ultralytics.trainers import atomic_strip_optimizer

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("ultralytics").addHandler(handler)
    last = tmp_path / "last.pt"
    last.write_bytes(b"x")

    def strip(f, s="", updates=None):
        LOGGER.info(f"Optimizer stripped from {f},{f' saved as {s},' if s else ''} 5.4MB")
        Path(s).write_bytes(b"stripped")

    try:
        atomic_strip_optimizer(strip, last)
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)
    assert stream.getvalue() == f"Optimizer stripped from {last}, 5.4MB\n"
    assert last.read_bytes() == b"stripped" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
