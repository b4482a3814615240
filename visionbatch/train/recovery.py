"""Out-of-memory recovery for `visionbatch train`: the next batch, the accumulation that keeps the
effective batch, and the record of each recovery.

Ultralytics halves the batch on an OOM in the first epoch only, on one GPU, and lets the effective
batch (batch x gradient accumulation) drift with it. visionbatch turns that off
(`ultralytics.trainers`) and recovers from an OOM at any epoch instead:

- in training, `run.run` re-plans from what the device reported when it ran out (the reading
  replaces the plan's prediction at the failed batch, `batch_after_oom`), keeps the effective batch
  by raising gradient accumulation (`keep_effective`), and resumes from the last complete epoch's
  `last.pt` with Ultralytics' own resume (optimizer, EMA, scheduler, warm-up are in the checkpoint);
- in validation, the trainer validates again at half the validation batch, and training is not
  touched (`ultralytics.trainers.AtomicCheckpoints.validate`).

Everything here is pure: numbers in, numbers out.
"""

from __future__ import annotations

import dataclasses
import math

DEFAULT_OOM_RETRIES = 3  # training recoveries before giving up (validation halves down to batch 1 on its own)


@dataclasses.dataclass(frozen=True, slots=True)
class Recovery:
    """One out-of-memory error the run survived, as `visionbatch.json` records it.

    Attributes:
        at: when it happened (UTC, ISO 8601).
        phase: 'train' (a training step), 'val' (an epoch's validation) or 'final_val' (best.pt's).
        epoch: the 1-based epoch it happened in.
        iteration: the 0-based batch of that epoch (training), or None.
        mosaic: whether mosaic was on in that epoch (None when unknown).
        old_batch: the batch that ran out (the validation batch for 'val' and 'final_val').
        new_batch: the batch the run went on with.
        old_accumulate: gradient accumulation before (training only).
        new_accumulate: gradient accumulation after, chosen to keep batch x accumulate.
        effective_batch: new_batch x new_accumulate (training only).
        peak_bytes: what the step needed at least: the device's memory in use when the allocation
            failed plus that allocation (the plans' unit: reserved + CUDA context), else the
            epoch's peak reading; None when nothing could be read.
        resumed_from: where training went on from ('weights/last.pt (epoch 2 complete)', 'the start
            (no epoch was complete)', or 'validation again' for the validation phases).
        error: the first line of the out-of-memory message.
    """

    at: str
    phase: str
    epoch: int
    iteration: int | None
    mosaic: bool | None
    old_batch: int
    new_batch: int
    old_accumulate: int | None
    new_accumulate: int | None
    effective_batch: int | None
    peak_bytes: int | None
    resumed_from: str
    error: str


def batch_after_oom(old_batch: int, needed_bytes: int | None, budget_bytes: int | None,
                    fixed_bytes: float = 0.0) -> int:
    """The largest batch the observed need allows, below the one that ran out.

    The reading at `old_batch` replaces the prediction there: the memory curve is redrawn through
    it, keeping the plan's fixed part (model, optimizer, EMA: what does not grow with the batch),
    so the per-image cost is `(needed - fixed) / old_batch`. Without a reading or a budget it
    halves, as Ultralytics does.

    Examples:
        >>> batch_after_oom(16, needed_bytes=1100, budget_bytes=900, fixed_bytes=300)  # 50 per image
        12
        >>> batch_after_oom(16, needed_bytes=None, budget_bytes=900), batch_after_oom(1, 10, 5)
        (8, 1)
        >>> batch_after_oom(16, needed_bytes=1000, budget_bytes=5000)  # never more than the batch that failed
        15
    """
    if old_batch <= 1:
        return 1
    if not needed_bytes or not budget_bytes:
        return max(old_batch // 2, 1)
    fixed = min(max(float(fixed_bytes), 0.0), 0.9 * needed_bytes)  # a curve whose intercept exceeds the reading is off
    per_image = (needed_bytes - fixed) / old_batch
    allowed = math.floor((budget_bytes - fixed) / per_image)
    return min(max(allowed, 1), old_batch - 1)


def keep_effective(effective_batch: int, most_images: int) -> tuple[int, int]:
    """(batch, accumulate) for at most `most_images` per step with batch x accumulate = effective_batch.

    The largest divisor of the effective batch keeps it exactly (and with it Ultralytics' weight
    decay scaling and the optimizer's step count per image). When that divisor is under half of
    what fits, throughput would suffer more than the schedule: it takes `most_images` and the
    nearest accumulation instead (the record shows the effective batch that results).

    Examples:
        >>> keep_effective(64, 13), keep_effective(72, 20), keep_effective(64, 64)
        ((8, 8), (18, 4), (64, 1))
        >>> keep_effective(68, 12)  # 68's divisors under 12 are 4 and less: keep 12, accumulate 6 (72)
        (12, 6)
        >>> keep_effective(128, 100)
        (64, 2)
    """
    most_images = max(1, min(most_images, effective_batch))
    divisor = next(b for b in range(most_images, 0, -1) if effective_batch % b == 0)
    if 2 * divisor >= most_images:
        return divisor, effective_batch // divisor
    return most_images, max(round(effective_batch / most_images), 1)
