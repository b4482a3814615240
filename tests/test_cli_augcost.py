"""`visionbatch augcost`: a table sorted by cost, augcost.json + augcost.png, --json, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbatch.cli import main

FAST = ["imgsz=96", "sizes=64,96", "images=12", "loader_workers=0", "loader_cache=False", "seconds=0.3",
        "step_img_per_s=40", "repeats=1"]


def test_table_json_and_png(capsys, small_shapes: Path, workdir: Path) -> None:
    code = main(["augcost", str(small_shapes), *FAST, "name=shapes"])
    out, err = capsys.readouterr()
    assert code == 0, err
    folder = workdir / "runs" / "augcost" / "shapes"
    saved = json.loads((folder / "augcost.json").read_text())
    assert saved["save_dir"] == str(folder) and saved["imgsz"] == 96 and saved["sizes"] == [96, 64]
    png = (folder / "augcost.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("transform ")))
    body = lines[start + 2: lines.index(next(line for line in lines if line.startswith("total per image")))]
    costs = [float(line[len("transform".ljust(len(lines[start + 1].split()[0]))):].split()[0]) for line in body]
    assert costs == sorted(costs, reverse=True)  # most expensive first
    assert any(line.startswith("RandomPerspective") for line in body)
    assert "validation chain at imgsz 96" in out and "cost per image against imgsz" in out
    assert "DataLoader throughput" in out and "verdict: " in out
    assert f"run folder: {folder}" in out
    assert "augcost: mosaic" in err  # progress lines go to stderr


def test_json_output(capsys, small_shapes: Path, workdir: Path) -> None:
    code = main(["augcost", str(small_shapes), *FAST, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert [p["phase"] for p in report["phases"]] == ["mosaic", "close_mosaic", "mosaic", "close_mosaic", "val"]
    assert report["verdict"]["bound"] in {"data", "compute"}
    assert Path(report["save_dir"], "augcost.json").is_file()


@pytest.mark.parametrize("extra, words", [
    (["pipeline=nope.yaml"], "visionbatch augcost: pipeline=nope.yaml: no such file"),
    (["size=64"], "unknown argument 'size=64' (did you mean 'sizes'?): see 'visionbatch augcost --help'"),
    (["imgsz=320,640"], "imgsz=320,640: imgsz is the training size (one integer); list the sizes to profile with "
                        "sizes=320,640"),
    (["seconds=-1"], "seconds=-1 is impossible"),
], ids=["missing-pipeline", "misspelt-key", "imgsz-list", "negative-seconds"])
def test_bad_input_exits_2_with_one_line(capsys, small_shapes: Path, workdir: Path, extra: list, words: str) -> None:
    code = main(["augcost", str(small_shapes), *extra])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert words in err
    assert not (workdir / "runs").exists()


def test_bad_pipeline_file_through_the_cli(capsys, small_shapes: Path, workdir: Path) -> None:
    bad = workdir / "aug.yaml"
    bad.write_text("transform:\n  __class_fullname__: Compose\n  transforms:\n  - __class_fullname__: Blurr\n")
    code = main(["augcost", str(small_shapes), f"pipeline={bad}"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err == (f"visionbatch augcost: pipeline={bad}: unknown Albumentations transform 'Blurr' "
                   f"(albumentations {__import__('albumentations').__version__}): did you mean 'Blur'? fix the name, "
                   f"or save the pipeline with the Albumentations version installed here\n")


def test_help_lists_augcost_keys(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["augcost", "--help"])
    out = capsys.readouterr().out
    for key in ("sizes=", "pipeline=", "loader_workers=", "loader_cache=", "step_img_per_s=", "seconds="):
        assert key in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "augcost" in capsys.readouterr().out
