"""The calling process's global state, saved before a visionbatch call and given back after it.

Ultralytics changes process-wide state, some at import and some per run: environment variables
(OMP_NUM_THREADS, NUMEXPR_MAX_THREADS, TF_CPP_MIN_LOG_LEVEL, TORCH_CPP_LOG_LEVEL, KINETO_LOG_LEVEL,
CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED, ...), OpenCV's thread count, torch's and NumPy's print
options, warnings filters, the global random generators (its trainer reseeds them), torch's
deterministic-algorithm and cuDNN flags and thread count. `kept_process_state()` records all of
these and puts them back, so a Python caller's process is as it was after `visionbatch.train()`.

What cannot be given back is listed in README ("Offline by construction"): modules stay imported,
Ultralytics' "ultralytics" logger keeps the handler its import attached, and ONNX Runtime's
telemetry, once off for the process, stays off.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import warnings
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def kept_process_state() -> Iterator[None]:
    """Save the process-wide state Ultralytics and training touch; restore it on exit, also after an error.

    Examples:
        >>> import os
        >>> with kept_process_state():
        ...     os.environ["VISIONBATCH_DOCTEST"] = "1"
        >>> "VISIONBATCH_DOCTEST" in os.environ
        False
    """
    environ = dict(os.environ)
    python_rng = random.getstate()
    extras = _save_libraries()
    with warnings.catch_warnings():
        try:
            yield
        finally:
            random.setstate(python_rng)
            _restore_libraries(extras)
            _restore_environ(environ)  # last: restoring torch's flags can import modules that set variables


def _restore_environ(saved: dict[str, str]) -> None:
    for key in [k for k in os.environ if k not in saved]:
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _save_libraries() -> dict[str, Any]:
    """NumPy, torch and OpenCV state, for the libraries that are imported (importing one is not a change)."""
    saved: dict[str, Any] = {}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        saved["numpy"] = (numpy.get_printoptions(), numpy.random.get_state())
    torch = sys.modules.get("torch")
    if torch is not None:
        from torch._tensor_str import PRINT_OPTS

        saved["torch"] = {
            "print": dict(vars(PRINT_OPTS)),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            "threads": torch.get_num_threads(),
            "deterministic": (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled()),
            "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
            "fill": torch.utils.deterministic.fill_uninitialized_memory,
        }
    try:
        import cv2  # Ultralytics imports it anyway; its import sets cv2's thread count
    except ImportError:
        cv2 = None
    if cv2 is not None:
        saved["cv2"] = cv2.getNumThreads()
    return saved


def _restore_libraries(saved: dict[str, Any]) -> None:
    if "numpy" in saved:
        import numpy

        options, state = saved["numpy"]
        numpy.set_printoptions(**options)
        numpy.random.set_state(state)
    if "torch" in saved:
        import torch
        from torch._tensor_str import PRINT_OPTS

        state = saved["torch"]
        for name, value in state["print"].items():
            setattr(PRINT_OPTS, name, value)
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        torch.set_num_threads(state["threads"])
        if (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled()) != state["deterministic"]:
            torch.use_deterministic_algorithms(state["deterministic"][0], warn_only=state["deterministic"][1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = state["cudnn"]
        torch.utils.deterministic.fill_uninitialized_memory = state["fill"]
    if "cv2" in saved:
        import cv2

        cv2.setNumThreads(saved["cv2"])
