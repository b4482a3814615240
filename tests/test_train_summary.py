"""`visionbatch train`'s closing lines: a poor first result explained, and what to run next."""

from __future__ import annotations

from visionbatch.cli.train import next_steps, show
from visionbatch.train.result import TrainResult


def result(map50_95: float, model: str = "yolo11n.yaml", status: str = "completed", **more: object) -> TrainResult:
    return TrainResult(
        status=status, save_dir="/runs/detect/train2", task="detect", model=model, data="datasets/shapes/data.yaml",
        device="cpu", device_name="AMD EPYC", cpu_threads=2, batch_size=16, batch_source="argument",
        args={"imgsz": 320}, versions={}, epochs=(), setup_s=1.0, wall_s=60.0,
        final_metrics={"metrics/mAP50(B)": 0.0, "metrics/mAP50-95(B)": map50_95}, best=None, last=None, **more)


def test_a_near_zero_map_from_scratch_is_explained() -> None:
    lines = next_steps(result(0.0))
    assert lines[0].startswith("note: mAP50-95 0.000 after 0 epochs: yolo11n.yaml starts from random weights")
    assert "epochs=100" in lines[0] and "model=path/to/yolo11n.pt" in lines[0]
    assert not next_steps(result(0.31))[0].startswith("note:")  # a working detector needs no excuse
    assert not next_steps(result(0.01, status="interrupted"))[0].startswith("note:")
    assert "has not learned this data yet" in next_steps(result(0.01, model="best.pt"))[0]


def test_the_summary_names_the_next_commands_on_this_run() -> None:
    text = show(result(0.2))
    assert "final: mAP50(B) 0.0000, mAP50-95(B) 0.2000" in text
    assert "  visionbatch fit datasets/shapes/data.yaml" in text
    assert "  visionbatch augcost datasets/shapes/data.yaml" in text
    assert "  visionbatch infer /runs/detect/train2/weights/best.pt imgsz=320" in text


def test_a_remapped_run_suggests_commands_that_remap_too() -> None:
    text = "\n".join(next_steps(result(0.2, remapped_classes=True)))
    assert "visionbatch fit datasets/shapes/data.yaml remap_classes=True" in text
    assert "visionbatch augcost datasets/shapes/data.yaml remap_classes=True" in text
    assert "data=datasets/shapes/data.yaml remap_classes=True" in text
