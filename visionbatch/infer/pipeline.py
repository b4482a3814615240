"""One timed call: the model alone, or end to end (letterbox -> model -> NMS, masks for segmentation).

Model-only steps reuse one input per batch size, prepared outside the timing, like trtexec and
Ultralytics' `benchmark()` inference figure. End-to-end steps letterbox real photos (Ultralytics'
two sample images, 810x1080 and 1280x720, decoded once: cameras hand frames over decoded), move
them to the device, run the model, and apply Ultralytics' own `non_max_suppression` (and
`process_mask` for segmentation) with its predict defaults (conf 0.25, IoU 0.7, 300 detections).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from visionbatch.checks import STRIDE

SAMPLE_IMAGES = ("bus.jpg", "zidane.jpg")
CONF, IOU, MAX_DET = 0.25, 0.7, 300  # Ultralytics' predict defaults


def model_step(runner: Any, batch_size: int, imgsz: int, seed: int = 0) -> Callable[[], None]:
    """A call that runs the model on a fixed random batch and waits for it to finish."""
    array = np.random.default_rng(seed).random((batch_size, 3, imgsz, imgsz), dtype=np.float32)
    inputs = runner.prepare(array)

    def step() -> None:
        runner.infer(inputs)
        runner.synchronize()

    return step


def load_frames() -> list[np.ndarray]:
    """Ultralytics' sample photos as BGR arrays (shipped inside the ultralytics package)."""
    import cv2

    from visionbatch.ultralytics.offline import offline

    with offline():
        from ultralytics.utils import ASSETS
    frames = [cv2.imread(str(ASSETS / name)) for name in SAMPLE_IMAGES]
    return [f for f in frames if f is not None]


class EndToEnd:
    """Letterbox + model + NMS (+ masks) for a batch, each stage timed."""

    def __init__(self, runner: Any, imgsz: int, task: str, num_classes: int, stride: int = STRIDE,
                 frames: list[np.ndarray] | None = None) -> None:
        from visionbatch.ultralytics.offline import offline

        with offline():
            from ultralytics.data.augment import LetterBox
            from ultralytics.utils.nms import non_max_suppression
            from ultralytics.utils.ops import process_mask
        self.letterbox = LetterBox(new_shape=(imgsz, imgsz), auto=False, stride=stride)
        self.nms = non_max_suppression
        self.process_mask = process_mask
        self.runner = runner
        self.imgsz = imgsz
        self.task = task
        self.num_classes = num_classes
        self.frames = frames if frames is not None else load_frames()

    def preprocess(self, batch_size: int) -> np.ndarray:
        images = [self.letterbox(image=self.frames[i % len(self.frames)]) for i in range(batch_size)]
        batch = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2)  # BGR -> RGB, BHWC -> BCHW
        return np.ascontiguousarray(batch, dtype=np.float32) / 255.0

    def postprocess(self, outputs: list[Any]) -> int:
        """NMS (and masks); returns the number of detections kept."""
        import torch

        prediction = torch.as_tensor(outputs[0]).float()
        detections = self.nms(prediction, CONF, IOU, max_det=MAX_DET, nc=self.num_classes)
        if self.task == "segment":
            protos = torch.as_tensor(outputs[1]).float()
            for index, found in enumerate(detections):
                if len(found):
                    self.process_mask(protos[index], found[:, 6:], found[:, :4], (self.imgsz, self.imgsz),
                                      upsample=True)
        return sum(len(found) for found in detections)

    def step(self, batch_size: int) -> Callable[[], dict[str, Any]]:
        """A call through the whole pipeline; returns stage times (ms) and detections per image."""

        def run() -> dict[str, Any]:
            t0 = time.perf_counter()
            inputs = self.runner.prepare(self.preprocess(batch_size))
            t1 = time.perf_counter()
            outputs = self.runner.infer(inputs)
            self.runner.synchronize()
            t2 = time.perf_counter()
            kept = self.postprocess(outputs)
            t3 = time.perf_counter()
            stages = {"preprocess": (t1 - t0) * 1000, "inference": (t2 - t1) * 1000, "postprocess": (t3 - t2) * 1000}
            return {"stages_ms": stages, "detections": kept / batch_size}

        return run
