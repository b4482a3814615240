"""visionbatch.process_state: what a call changes in the process comes back after it, also after an error."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import pytest
import torch

from visionbatch.process_state import kept_process_state


def _state() -> tuple:
    return (dict(os.environ), random.getstate(), np.random.get_state()[1][:8].tolist(), torch.get_rng_state()[:8],
            np.get_printoptions()["linewidth"], torch._tensor_str.PRINT_OPTS.linewidth, len(warnings.filters),
            torch.get_num_threads(), torch.backends.cudnn.benchmark)


def _change_everything() -> None:
    os.environ["VISIONBATCH_TEST_VARIABLE"] = "1"
    os.environ.pop("HOME", None)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.set_printoptions(linewidth=321)
    torch.set_printoptions(linewidth=321)
    warnings.filterwarnings("ignore", message="visionbatch test")
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = not torch.backends.cudnn.benchmark


def test_everything_comes_back() -> None:
    before = _state()
    with kept_process_state():
        _change_everything()
        assert _state() != before
    after = _state()
    assert (after[0], after[1], after[2], after[4:]) == (before[0], before[1], before[2], before[4:])
    assert torch.equal(after[3], before[3])


def test_everything_comes_back_after_an_error() -> None:
    before = _state()
    with pytest.raises(KeyboardInterrupt), kept_process_state():
        _change_everything()
        raise KeyboardInterrupt
    after = _state()
    assert (after[0], after[1], after[2], after[4:]) == (before[0], before[1], before[2], before[4:])
    assert torch.equal(after[3], before[3])
