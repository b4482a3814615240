"""`visionbatch cache list / clear` and infer's kept choices (`infer.kept`): each choice listed with its model,
runner, load and policy, an unusable entry named as such, one choice removed by its key, and `--json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionbatch.cli import main
from visionbatch.fit import cache
from visionbatch.infer import kept
from visionbatch.results import json_sha256
from visionbatch.units import human_bytes

REAL_PLANS_DIR, REAL_CHOICES_DIR = cache.plans_dir, kept.choices_dir  # conftest gives each test its own folders
HINT = "remove one (a plan or a kept choice): visionbatch cache clear KEY; all: visionbatch cache clear"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """visionbatch's cache where users have it, `$XDG_CACHE_HOME/visionbatch`, with XDG_CACHE_HOME in tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(kept.os, "cpu_count", lambda: 2)  # keys hold the CPU count: the same hashes on any machine
    monkeypatch.setattr(cache, "plans_dir", REAL_PLANS_DIR)
    monkeypatch.setattr(kept, "choices_dir", REAL_CHOICES_DIR)
    folder = tmp_path / "xdg" / "visionbatch"
    assert (cache.plans_dir(), kept.choices_dir()) == (folder / "plans", folder / "choices")
    return folder


def key(**changes):
    base = {"model_sha256": "ab", "model": "models/m.onnx", "backend": "onnxruntime",
            "provider": "CPUExecutionProvider", "precision": "fp32", "imgsz": 320, "end_to_end": False, "device": "cpu",
            "device_name": "AMD EPYC", "threads": 2, "target": None, "batch_sizes": (1, 2, 4), "latency_ms": 500,
            "memory_budget_bytes": None, "memory_fraction": None, "streams": 4, "fps": 10,
            "software": {"onnxruntime": "1.32.0", "visionbatch": "0.1"}}
    return kept.choice_key(**{**base, **changes})


def stored_two() -> tuple[str, str]:
    """Two kept choices for two questions: batch 2 for 4 x 10 fps in fp32, batch 4 without a load in fp16."""
    first, second = key(), key(precision="fp16", imgsz=640, streams=None, fps=None)
    kept.store_choice(first, 2, 25.0, "runs/infer/a", chosen_at="2026-11-30T15:05:09+00:00")
    kept.store_choice(second, 4, None, "runs/infer/b", chosen_at="2026-12-01T08:00:00+00:00")
    return json_sha256(first), json_sha256(second)


def size(digest: str) -> str:
    return human_bytes((kept.choices_dir() / f"{digest}.json").stat().st_size)


def listed(capsys: pytest.CaptureFixture) -> list[str]:
    assert main(["cache", "list"]) == 0
    return capsys.readouterr().out.splitlines()


def test_cache_list_shows_each_kept_choice_after_the_plans(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert listed(capsys) == [f"no plans cached in {home / 'plans'}"]  # no kept choice: nothing more
    first, second = stored_two()
    assert listed(capsys) == [
        f"no plans cached in {home / 'plans'}",
        "",
        f"infer's kept choices (keep_choice=): 2 in {home / 'choices'}",
        "key           chosen (UTC)      model   runner            imgsz        load  batch  queue delay ms   size",
        "------------  ----------------  ------  ----------------  -----  ----------  -----  --------------  -----",
        (f"{second[:12]}  2026-12-01 08:00  m.onnx  onnxruntime/fp16    640           -      4               -  "
         f"{size(second)}"),
        (f"{first[:12]}  2026-11-30 15:05  m.onnx  onnxruntime/fp32    320  4 x 10 fps      2              25  "
         f"{size(first)}"),
        "",
        HINT,
    ]


def test_an_unusable_entry_is_listed_as_such_and_text_from_an_entry_is_escaped(
        home: Path, capsys: pytest.CaptureFixture) -> None:
    evil = key(model="x\n\x1b[31m.onnx")
    kept.store_choice(evil, 1, 0.0, "r", chosen_at="2026-11-30T15:00:00+00:00")
    (kept.choices_dir() / f"{'0' * 64}.json").write_text("{broken")
    wrong = kept.store_choice(key(fps=12), 2, 25.0, "r", chosen_at="2026-11-30T16:00:00+00:00")
    wrong.write_text(json.dumps({**json.loads(wrong.read_text()), "batch_size": "2"}))
    lines = listed(capsys)
    rows = [line for line in lines if line[:12] in (json_sha256(evil)[:12], wrong.stem[:12], "0" * 12)]
    assert [row.split() for row in rows] == [
        [json_sha256(evil)[:12], "2026-11-30", "15:00", "x\\n\\x1b[31m.onnx", "onnxruntime/fp32", "320", "4", "x",
         "10", "fps", "1", "0", *size(json_sha256(evil)).split()],
        [wrong.stem[:12], "-", "-", "-", "-", "-", "-", "-", *size(wrong.stem).split()],  # newest first, then these
        ["0" * 12, "-", "-", "-", "-", "-", "-", "-", *size("0" * 64).split()],
        f"{wrong.stem[:12]}: unusable (its batch is not a whole number of at least 1); the next infer of its "
        f"question replaces it".split(),
        f"{'0' * 12}: unusable (unreadable (JSONDecodeError)); the next infer of its question replaces it".split(),
    ]
    assert not any("\x1b" in line for line in lines)


def test_numbers_no_float_holds_are_unusable_or_left_out_never_a_traceback(
        home: Path, capsys: pytest.CaptureFixture) -> None:
    huge = "1" + "0" * 400  # a JSON integer: float() of it overflows
    delay = kept.store_choice(key(fps=11), 2, 25.0, "r", chosen_at="2026-11-30T15:00:00+00:00")
    delay.write_text(delay.read_text().replace('"queue_delay_ms": 25.0', f'"queue_delay_ms": {huge}', 1))
    fps = kept.store_choice(key(fps=12), 2, 25.0, "r", chosen_at="2026-11-30T16:00:00+00:00")
    fps.write_text(fps.read_text().replace('"fps": 12.0', f'"fps": {huge}', 1))
    assert huge in delay.read_text() and huge in fps.read_text()
    lines = listed(capsys)
    assert f"{delay.stem[:12]}: unusable (its queue delay is not a number of ms of at least 0); the next infer of " \
           f"its question replaces it" in lines
    (row,) = [line for line in lines if line.startswith(fps.stem[:12])]
    assert row.split()[5:8] == ["320", "-", "2"]  # its load is no number: shown as none, the rest as stored


def test_cache_clear_key_removes_one_kept_choice_and_leaves_the_other(home: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    first, second = stored_two()
    assert main(["cache", "clear", first[:8]]) == 0
    assert capsys.readouterr().out == f"removed 1 kept inference choice from {home / 'choices'}\n"
    assert [c.key_hash for c in kept.list_choices()] == [second]
    assert kept.load_choice(key()) is None and kept.load_choice(
        key(precision="fp16", imgsz=640, streams=None, fps=None)).batch_size == 4
    assert main(["cache", "clear", first[:8], "--json"]) == 0  # gone already: nothing removed, not an error
    assert json.loads(capsys.readouterr().out) == {
        "folder": str(home / "plans"), "removed": [], "prefix": first[:8], "kept_choices_removed": 0,
        "choices_folder": str(home / "choices")}


def test_a_key_matching_nothing_names_both_folders(home: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = stored_two()
    nothing = first[:-1] + ("0" if first[-1] != "0" else "1")  # all of the first choice's key but its last digit
    assert not second.startswith(nothing)
    assert main(["cache", "clear", nothing]) == 0
    assert capsys.readouterr().out == (f"no plan's or kept choice's key starts with {nothing} in {home / 'plans'} or "
                                       f"{home / 'choices'} (visionbatch cache list shows them)\n")
    assert kept.count_choices() == 2 and not (home / "plans").exists()


def test_a_key_starting_a_plan_and_a_kept_choice_removes_neither(home: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = stored_two()
    assert not second.startswith(first[:4])  # fixed hashes (the CPU count is pinned): only the plan below shares it
    plan = home / "plans" / f"{first[:4]}{'f' * 60}.json"  # a plan whose key starts as the first choice's does
    plan.parent.mkdir(parents=True)
    plan.write_text("{}")
    assert main(["cache", "clear", first[:4]]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"{first[:4]}: a plan's key ({first[:4]}{'f' * 8}) and a kept choice's ({first[:12]}) start with it: give "
        f"more of the key")
    assert plan.exists() and kept.count_choices() == 2
    assert main(["cache", "clear", first[:5]]) == 0  # one more digit: the kept choice alone
    assert capsys.readouterr().out == f"removed 1 kept inference choice from {home / 'choices'}\n"
    assert plan.exists() and [c.key_hash for c in kept.list_choices()] == [second]


def test_a_key_starting_two_kept_choices_removes_nothing(home: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = stored_two()
    assert not second.startswith(first[:3])  # so that the twin below makes two, not three
    twin = kept.choices_dir() / f"{first[:3]}{'f' * 61}.json"
    twin.write_text("{}")
    plan = home / "plans" / f"{first[:3]}{'e' * 61}.json"
    plan.parent.mkdir(parents=True)
    plan.write_text("{}")
    assert main(["cache", "clear", first[:3]]) == 2
    assert capsys.readouterr().err == (f"visionbatch cache: {first[:3]}: 2 entries' keys start with it "
                                       f"({min(first, twin.stem)[:12]}, {max(first, twin.stem)[:12]}): give more "
                                       f"of the key\n")
    assert plan.exists() and twin.exists() and kept.count_choices() == 3


def test_cache_list_json_carries_the_kept_choices(home: Path, capsys: pytest.CaptureFixture) -> None:
    first, second = stored_two()
    assert main(["cache", "list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kept_choices"], out["choices_folder"]) == (2, str(home / "choices"))
    rows = [{k: v for k, v in row.items() if k != "key"} for row in out["choices"]]
    assert rows == [
        {"key_hash": second, "chosen_at": "2026-12-01T08:00:00+00:00", "model": "m.onnx",
         "runner": "onnxruntime/fp16", "imgsz": 640, "load": None, "batch_size": 4, "queue_delay_ms": None,
         "run_dir": "runs/infer/b", "size_bytes": (home / "choices" / f"{second}.json").stat().st_size,
         "path": str(home / "choices" / f"{second}.json"), "problem": None},
        {"key_hash": first, "chosen_at": "2026-11-30T15:05:09+00:00", "model": "m.onnx",
         "runner": "onnxruntime/fp32", "imgsz": 320, "load": "4 x 10 fps", "batch_size": 2, "queue_delay_ms": 25.0,
         "run_dir": "runs/infer/a", "size_bytes": (home / "choices" / f"{first}.json").stat().st_size,
         "path": str(home / "choices" / f"{first}.json"), "problem": None},
    ]
    assert out["choices"][1]["key"] == json.loads(json.dumps(key()))


def test_cache_clear_without_a_key_removes_every_plan_and_kept_choice(home: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    stored_two()
    (kept.choices_dir() / ".x.json.1.partial").write_text("{")  # a killed writer's leftover
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == (f"removed 0 plans from {home / 'plans'}, and 2 kept inference choices from "
                                       f"{home / 'choices'}\n")
    assert sorted(p.name for p in kept.choices_dir().iterdir()) == [".lock"]
    assert listed(capsys) == [f"no plans cached in {home / 'plans'}"]


def test_the_kept_choices_follow_the_plans_table_after_one_blank_line(home: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    first, _ = stored_two()
    (home / "plans").mkdir()
    (home / "plans" / f"{'a' * 64}.json").write_text("{broken")
    lines = listed(capsys)
    start = lines.index(f"{'a' * 12}: unusable (unreadable (JSONDecodeError)); the next fit of its key replaces it")
    assert lines[start - 1:start + 3] == ["", lines[start], "",
                                          f"infer's kept choices (keep_choice=): 2 in {home / 'choices'}"]
    assert lines[1] == f"visionbatch cache: 1 plans in {home / 'plans'}" and lines[-1] == HINT
    assert lines[-3].startswith(f"{first[:12]}  2026-11-30 15:05  m.onnx")
