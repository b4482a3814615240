"""`visionbatch train`'s closing lines: a poor first result explained, and what to run next."""

from __future__ import annotations

import dataclasses

from visionbatch.cli.args import typed_pairs
from visionbatch.cli.train import TrainRun, next_steps, show
from visionbatch.results import to_jsonable
from visionbatch.train.result import TrainResult


def result(map50_95: float, model: str = "yolo11n.yaml", status: str = "completed",
           data: str = "datasets/shapes/data.yaml", **more: object) -> TrainResult:
    return TrainResult(
        status=status, save_dir="/runs/detect/train2", task="detect", model=model, data=data,
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


def test_the_next_commands_carry_the_users_arguments() -> None:
    tokens = ["datasets/shapes/data.yaml", "model=yolo11s.yaml", "imgsz=640", "epochs=50", "close_mosaic=5",
              "batch=16", "name=a b", "remap_classes=True", "oom_retries=2"]
    trained = dataclasses.replace(result(0.2, remapped_classes=True), save_dir="runs/detect/a b", args={"imgsz": 640})
    assert next_steps(trained, typed_pairs(tokens)) == [
        "next:",
        # fit finds the batch (batch= dropped) and refuses train's oom_retries=; quoted for a shell
        "  visionbatch fit datasets/shapes/data.yaml model=yolo11s.yaml imgsz=640 epochs=50 close_mosaic=5 "
        "'name=a b' remap_classes=True                   # the largest batch this device (or target=) holds",
        "  visionbatch augcost datasets/shapes/data.yaml model=yolo11s.yaml imgsz=640 epochs=50 close_mosaic=5 "
        "'name=a b' batch=16 remap_classes=True      # is the data pipeline or the model the bottleneck",
        "  visionbatch infer 'runs/detect/a b/weights/best.pt' imgsz=640   # the deployment batch and its latency "
        "(add precision=fp32,int8 data=datasets/shapes/data.yaml remap_classes=True for INT8's speed and mAP)",
    ]


def test_a_fitted_batch_reaches_augcost_as_the_size_trained_with() -> None:
    fitted = dataclasses.replace(result(0.2), batch_size=24)
    lines = next_steps(fitted, typed_pairs(["d.yaml", "batch=auto", "memory_budget=8GiB", "data=d.yaml"]))
    assert lines[1] == ("  visionbatch fit datasets/shapes/data.yaml memory_budget=8GiB      "
                        "# the largest batch this device (or target=) holds")
    assert lines[2] == ("  visionbatch augcost datasets/shapes/data.yaml batch=24            "
                        "# is the data pipeline or the model the bottleneck")  # augcost refuses batch=auto


def test_the_cli_result_carries_the_typed_arguments_but_prints_the_same_json() -> None:
    trained = result(0.2)
    run = TrainRun.of(trained, typed_pairs(["d.yaml", "epochs=3"]))
    assert to_jsonable(run) == to_jsonable(trained)  # --json prints visionbatch.json's fields, nothing more
    assert "  visionbatch fit datasets/shapes/data.yaml epochs=3" in show(run)
    assert "  visionbatch fit datasets/shapes/data.yaml" + " " * 10 + "#" in show(trained)


def test_visionbatch_train_hands_its_arguments_to_the_summary(monkeypatch, capsys) -> None:
    import json

    import visionbatch.train.run
    from visionbatch.cli import main

    monkeypatch.setattr(visionbatch.train.run, "train", lambda data, **kwargs: result(0.2, data=data))
    assert main(["train", "datasets/shapes/data.yaml", "epochs=3", "oom_retries=1"]) == 0
    assert "  visionbatch fit datasets/shapes/data.yaml epochs=3          #" in capsys.readouterr().out
    assert main(["train", "datasets/shapes/data.yaml", "epochs=3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == to_jsonable(result(0.2))
