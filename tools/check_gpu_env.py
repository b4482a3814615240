#!/usr/bin/env python3
"""Check on a CPU machine that tools/gpu_check.py and the carried wheels work with the GPU machine's Python.

The GPU machine (device tool, kind nvidia-h200) has Python 3.12, torch 2.11 and a fixed set of
packages (below, from /work/.library/device/KINDS.md), and no network: Ultralytics, albumentations
and what they need travel as wheels in .whl/ (../shared/tools/gpu-wheels.sh). Run once by hand,
from the project root, after gpu-wheels.sh (not part of the test suite: it downloads and installs
about 3 GiB). Each step prints ok, FAILED or SKIPPED, with why:

1. requirements: every carried wheel's Requires-Dist, for Python 3.12 on Linux x86-64, is met by
   another carried wheel or by a package the machine has (at the version it has, where known);
2. venv: a throwaway venv under /tmp with --python and what the registry has of the machine's
   packages (its versions where KINDS.md gives them), then .whl/install.sh into a site folder, as
   the GPU command does (PYTHON= and SITE= point it here);
3. compile: visionbatch/ and tools/ byte-compile under that interpreter;
4. imports: every module gpu_check's processes import, with PYTHONPATH as on the GPU machine;
5. simulate: `gpu_check.py --simulate` end to end in the venv, on a small copy of the shipped data.

Usage:
    python tools/check_gpu_env.py --python ~/.pyenv/versions/3.12.1/bin/python [--venv /tmp/gpu-env-312]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the GPU machine's Python packages (KINDS.md, read on a machine running the image on 2026-11-17), with the
# versions its 'pip list' row gives; None: there, version unknown
MACHINE = {name: None for name in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio
attrs botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub
humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow
pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split()}
MACHINE.update({"numpy": "2.5.2", "onnx": "1.23.1", "onnxruntime": "1.30.0", "torch": "2.11.0", "torchvision": "0.26.0",
                "triton": "3.6.0", "safetensors": "0.8.0"})
# what the venv installs: the packages gpu_check's stack imports, at the machine's versions where known
VENV_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "pandas", "onnx", "onnxruntime",
                 "opencv-python-headless", "nvidia-ml-py", "pyyaml", "pillow", "psutil", "requests", "httpx",
                 "typing-extensions")
# every module a gpu_check process imports, lazily or not (the worker's units, the planner, the trace, Ultralytics)
IMPORTS = ("torch", "torchvision", "cv2", "numpy", "yaml", "pynvml", "polars", "albumentations", "ultralytics",
           "ultralytics.cfg", "ultralytics.nn.tasks", "ultralytics.engine.trainer", "ultralytics.utils.autobatch",
           "visionbatch", "visionbatch.dataset", "visionbatch.devices.memory", "visionbatch.devices.oom",
           "visionbatch.ultralytics.offline", "visionbatch.ultralytics.job", "visionbatch.ultralytics.spec",
           "visionbatch.ultralytics.step", "visionbatch.fit.api", "visionbatch.fit.planner",
           "visionbatch.fit.probes.cuda", "visionbatch.fit.probes.trace", "visionbatch.fit.probes.simulated",
           "visionbatch.fit.cache", "visionbatch.train.run", "visionbatch.ultralytics.trainers",
           "gpu_check", "gpu_check_runner", "gpu_check_report", "gpu_check_devices", "gpu_check_worker",
           "gpu_check_phase_d")


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) of a wheel."""
    with zipfile.ZipFile(path) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(meta).decode()
    fields = [line.split(": ", 1) for line in text.splitlines() if ": " in line]
    value = {k: v for k, v in fields if k in ("Name", "Version")}
    return normal(value["Name"]), value["Version"], [v for k, v in fields if k == "Requires-Dist"]


def check_requirements(wheels: list[Path]) -> tuple[list[str], list[str]]:
    """(problems, unknowns) of the carried set: a requirement neither carried nor on the machine, or at a
    wrong version; and those the machine has at a version KINDS.md does not give (hello prints them there)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    carried = {name: version for name, version, _ in map(wheel_metadata, wheels)}
    problems, unknowns = [], []
    for wheel in wheels:
        name, _, requires = wheel_metadata(wheel)
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            wanted = normal(req.name)
            if wanted in carried:
                version = carried[wanted]
            elif wanted == "opencv-python" and "opencv-python-headless" in MACHINE:
                continue  # the same cv2 module: Ultralytics imports it, and never asks pip which one
            elif wanted in MACHINE:
                version = MACHINE[wanted]
                if version is None:
                    if req.specifier:
                        unknowns.append(f"{name} needs {req}")
                    continue
            else:
                problems.append(f"{name} needs {req}: neither carried nor on the machine; add it to the wheels")
                continue
            if not req.specifier.contains(Version(version), prereleases=True):
                problems.append(f"{name} needs {req}, and {wanted} is {version} there")
    return problems, unknowns


def run(cmd: list[str], env: dict | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def report(step: str, ok: bool | None, detail: str = "") -> bool:
    word = "SKIPPED" if ok is None else "ok" if ok else "FAILED"
    print(f"[{word}] {step}" + (f": {detail}" if detail else ""), flush=True)
    return bool(ok)


def make_venv(python: str, venv: Path, site: Path) -> bool:
    if not (venv / "bin" / "python").exists():
        proc = run([python, "-m", "venv", str(venv)])
        if proc.returncode:
            return report("venv", False, proc.stderr.strip()[-500:])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    pinned = [f"{p}=={MACHINE[p]}" if MACHINE.get(p) else p for p in VENV_PACKAGES]
    env = {**os.environ, "PIP_CONSTRAINT": ""}  # this machine caps torch at its own release: the GPU's is older
    proc = run(pip + pinned, env=env)
    if proc.returncode:  # say what could not be had, and go on with what could
        report("venv: the machine's versions", False, proc.stderr.strip()[-800:])
        proc = run(pip + list(VENV_PACKAGES), env=env)
        if proc.returncode:
            return report("venv: the packages at any version", False, proc.stderr.strip()[-800:])
    listed = run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"])
    versions = {normal(p["name"]): p["version"] for p in json.loads(listed.stdout or "[]")}
    report("venv", True, ", ".join(f"{p} {versions.get(normal(p), '?')}" for p in VENV_PACKAGES))
    proc = run(["bash", str(ROOT / ".whl" / "install.sh")],
               env={**os.environ, "PYTHON": str(venv / "bin" / "python"), "SITE": str(site)})
    return report("install.sh", proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-800:])


def gpu_env(venv: Path, site: Path) -> dict:
    """The environment the GPU command sets (see gpu_check.py's docstring), pointed at the venv."""
    return {**os.environ, "PYTHONPATH": f"{site}:{ROOT}:{ROOT / 'tools'}", "YOLO_CONFIG_DIR": "/tmp/yolo-config",
            "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0", "PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": str(venv),
            "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}


def check_imports(python: str, env: dict) -> bool:
    probe = ("import importlib, json, sys\nfailed = {}\nfor name in sys.argv[1:]:\n    try:\n"
             "        importlib.import_module(name)\n    except Exception as exc:\n"
             "        failed[name] = f'{type(exc).__name__}: {exc}'\nprint(json.dumps(failed))\n")
    proc = run([python, "-c", probe, *IMPORTS], env=env)
    if proc.returncode:
        return report("imports", False, proc.stderr.strip()[-800:])
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    return report("imports", not failed, "; ".join(f"{k}: {v}" for k, v in failed.items())
                  or f"{len(IMPORTS)} modules")


def check_simulate(python: str, env: dict) -> bool:
    folder = Path(tempfile.mkdtemp(prefix="gpu-env-"))
    for split, count in (("train", 8), ("val", 4)):
        for image in sorted((ROOT / "datasets" / "shapes" / "images" / split).glob("*.jpg"))[:count]:
            for kind, source in (("images", image), ("labels", image.parents[2] / "labels" / split / f"{image.stem}.txt")):
                (folder / "shapes" / kind / split).mkdir(parents=True, exist_ok=True)
                shutil.copy(source, folder / "shapes" / kind / split / source.name)
    shutil.copy(ROOT / "datasets" / "shapes" / "data.yaml", folder / "shapes" / "data.yaml")
    proc = run([python, str(ROOT / "tools" / "gpu_check.py"), "--simulate", "--data",
                str(folder / "shapes" / "data.yaml"), "--out", str(folder / "out")], env=env)
    detail = (proc.stdout.strip().splitlines() or [""])[-1] if proc.returncode == 0 else proc.stderr.strip()[-800:]
    ok = proc.returncode == 0 and " 0 failed" in proc.stdout
    return report("gpu_check.py --simulate", ok, f"{detail} (outputs in {folder / 'out'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", required=True, help="a Python 3.12 interpreter")
    parser.add_argument("--venv", default="/tmp/gpu-env-312")
    args = parser.parse_args(argv)
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    if not wheels:
        print("check_gpu_env: no wheels in .whl/: run ../shared/tools/gpu-wheels.sh first", file=sys.stderr)
        return 2
    results = []
    problems, unknowns = check_requirements(wheels)
    results.append(report("requirements", not problems, "; ".join(problems) or f"{len(wheels)} wheels"))
    if unknowns:
        print("  versions KINDS.md does not give (gpu_check's report lists the machine's): " + "; ".join(unknowns))
    venv, site = Path(args.venv), Path(args.venv) / "site"
    ready = make_venv(args.python, venv, site)
    python, env = str(venv / "bin" / "python"), gpu_env(venv, site)
    if ready:
        proc = run([python, "-m", "compileall", "-q", str(ROOT / "visionbatch"), str(ROOT / "tools")], env=env)
        results.append(report("compile", proc.returncode == 0, (proc.stdout + proc.stderr).strip()[-800:]))
        results.append(check_imports(python, env))
        results.append(check_simulate(python, env))
    else:
        results.append(report("compile, imports, simulate", None, "the venv could not be made (above)"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
