"""The one way visionbatch imports ONNX Runtime: with Microsoft's telemetry off.

Official onnxruntime wheels (1.32 here) carry the 1DS telemetry SDK. `import onnxruntime` writes a
store and a device id under `$XDG_CACHE_HOME/Microsoft/DeveloperTools` (else `~/.cache/...`), and
about 9 s later an uploader thread resolves mobile.events.data.microsoft.com from native code,
where Python's audit hooks do not see it. Only `ORT_DISABLE_TELEMETRY=1` in the environment
before ONNX Runtime initializes prevents all three; `disable_telemetry_events()` afterwards only
silences non-essential events (the uploader still starts).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime with its telemetry off and return the module.

    Sets `ORT_DISABLE_TELEMETRY=1` for the import (ONNX Runtime reads it once, when it first
    initializes) and gives the caller's value back afterwards, then calls
    `disable_telemetry_events()`. If the process imported onnxruntime before, without the variable,
    the telemetry store and uploader already exist and this call can only silence the events: to
    stop them, set `ORT_DISABLE_TELEMETRY=1` before anything imports onnxruntime.

    Raises:
        ImportError: onnxruntime is not installed.

    Examples:
        >>> before = os.environ.get("ORT_DISABLE_TELEMETRY")
        >>> ort = import_onnxruntime()
        >>> ort.__name__, os.environ.get("ORT_DISABLE_TELEMETRY") == before
        ('onnxruntime', True)
        >>> "CPUExecutionProvider" in ort.get_available_providers()
        True
    """
    module = sys.modules.get("onnxruntime")
    if module is None:
        before = os.environ.get(TELEMETRY_ENV)
        os.environ[TELEMETRY_ENV] = "1"  # visionbatch never reaches the network, whatever the caller had set
        try:
            import onnxruntime as module
        finally:
            if before is None:
                os.environ.pop(TELEMETRY_ENV, None)
            else:
                os.environ[TELEMETRY_ENV] = before
    module.disable_telemetry_events()
    return module
