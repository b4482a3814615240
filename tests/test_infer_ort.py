"""visionbatch.infer.ort: ONNX Runtime imported with its telemetry off, in this process and a fresh one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from visionbatch.infer.ort import TELEMETRY_ENV


@pytest.mark.parametrize("given", [None, "0"])
def test_a_fresh_process_writes_no_telemetry_store(tmp_path: Path, given: str | None) -> None:
    """Without the variable, `import onnxruntime` alone writes $XDG_CACHE_HOME/Microsoft/DeveloperTools.

    The variable is on for the import whatever the caller had set, and the caller's value is given back.
    """
    script = textwrap.dedent(
        """
        import os, sys
        import numpy as np
        from onnx import TensorProto, helper, save
        from visionbatch.infer.ort import import_onnxruntime

        info = helper.make_tensor_value_info
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                                  [info("x", TensorProto.FLOAT, [1])], [info("y", TensorProto.FLOAT, [1])])
        save(helper.make_model(graph), sys.argv[1])
        ort = import_onnxruntime()
        session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
        print(session.run(None, {"x": np.ones(1, np.float32)})[0][0], os.environ.get("ORT_DISABLE_TELEMETRY"))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")}
    if given is not None:
        env[TELEMETRY_ENV] = given
    env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "identity.onnx")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1.0", str(given)]
    assert [str(p) for p in tmp_path.rglob("Microsoft")] == []
