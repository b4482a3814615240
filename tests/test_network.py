"""No command reaches the network: zero DNS lookups, inet connections or pip runs, each in a fresh process.

Two witnesses watch every run, because neither sees everything:

- a Python audit hook: socket calls, urllib, and any `subprocess.Popen` of pip;
- a native shim, compiled here from `SHIM_C` and preloaded with LD_PRELOAD, that logs and refuses
  getaddrinfo, gethostbyname*, and connect/sendto/sendmsg to AF_INET/AF_INET6 addresses. ONNX
  Runtime's telemetry resolves its host from C++ code, where audit hooks see nothing.

Each process ends with one deliberate lookup that both witnesses must record, so an empty log
proves something. Each runs with HOME and the XDG folders in tmp_path and no YOLO_*,
ULTRALYTICS_* or ORT_* variables, as on a fresh machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SHAPES_YAML

from visionbatch.train.run import SUMMARY_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="the network shim is an LD_PRELOAD library (Linux)"),
]

LOG_ENV = "VISIONBATCH_NET_LOG"
SENTINEL_HOST = "visionbatch-audit.invalid"
SENTINEL = f"getaddrinfo {SENTINEL_HOST} 80"  # the shim's line for the deliberate lookup (pid stripped)

SHIM_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One line per call, "PID CALL DETAIL", appended to the file named by LOG_ENV (one write: atomic). */
static void note(const char *fmt, ...) {
    char line[1024];
    int n = snprintf(line, sizeof line, "%d ", (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    const char *path = getenv("LOG_ENV");
    int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : 2;
    if (fd < 0) return;
    if (write(fd, line, n) < 0) { /* nothing to do */ }
    if (path) close(fd);
}

static const char *inet(const struct sockaddr *addr, char *buf, size_t len) {
    if (!addr || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)) return NULL;
    const void *ip = addr->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)addr)->sin_addr
                                                : (const void *)&((const struct sockaddr_in6 *)addr)->sin6_addr;
    int port = ntohs(addr->sa_family == AF_INET ? ((const struct sockaddr_in *)addr)->sin_port
                                                : ((const struct sockaddr_in6 *)addr)->sin6_port);
    inet_ntop(addr->sa_family, ip, buf, len);
    snprintf(buf + strlen(buf), len - strlen(buf), " %d", port);
    return buf;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
    (void)hints; (void)res;
    note("getaddrinfo %s %s", node ? node : "-", service ? service : "-");
    return EAI_FAIL;
}

struct hostent *gethostbyname(const char *name) {
    note("gethostbyname %s", name ? name : "-");
    h_errno = NO_RECOVERY;
    return NULL;
}

struct hostent *gethostbyname2(const char *name, int af) {
    note("gethostbyname2 %s %d", name ? name : "-", af);
    h_errno = NO_RECOVERY;
    return NULL;
}

int gethostbyname_r(const char *name, struct hostent *ret, char *buf, size_t buflen,
                    struct hostent **result, int *h_errnop) {
    (void)ret; (void)buf; (void)buflen;
    note("gethostbyname_r %s", name ? name : "-");
    *result = NULL;
    *h_errnop = NO_RECOVERY;
    return ENOENT;
}

int gethostbyname2_r(const char *name, int af, struct hostent *ret, char *buf, size_t buflen,
                     struct hostent **result, int *h_errnop) {
    (void)ret; (void)buf; (void)buflen;
    note("gethostbyname2_r %s %d", name ? name : "-", af);
    *result = NULL;
    *h_errnop = NO_RECOVERY;
    return ENOENT;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    char where[INET6_ADDRSTRLEN + 8];
    if (inet(addr, where, sizeof where)) {
        note("connect %s", where);
        errno = ECONNREFUSED;
        return -1;
    }
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    return real(fd, addr, len);
}

ssize_t sendto(int fd, const void *data, size_t size, int flags, const struct sockaddr *addr, socklen_t len) {
    static ssize_t (*real)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    char where[INET6_ADDRSTRLEN + 8];
    if (inet(addr, where, sizeof where)) {
        note("sendto %s", where);
        errno = ENETUNREACH;
        return -1;
    }
    if (!real) real = (ssize_t (*)(int, const void *, size_t, int, const struct sockaddr *, socklen_t))
                      dlsym(RTLD_NEXT, "sendto");
    return real(fd, data, size, flags, addr, len);
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
    static ssize_t (*real)(int, const struct msghdr *, int);
    char where[INET6_ADDRSTRLEN + 8];
    if (msg && inet((const struct sockaddr *)msg->msg_name, where, sizeof where)) {
        note("sendmsg %s", where);
        errno = ENETUNREACH;
        return -1;
    }
    if (!real) real = (ssize_t (*)(int, const struct msghdr *, int))dlsym(RTLD_NEXT, "sendmsg");
    return real(fd, msg, flags);
}
""".replace("LOG_ENV", LOG_ENV)

# Runs `python -m visionbatch ARGV` once per entry of a JSON list, in this one process, under the hook.
AUDIT = textwrap.dedent(
    f"""
    import json, runpy, socket, sys, time

    NETWORK = {{"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr",
               "socket.sendto", "socket.sendmsg", "urllib.Request", "ftplib.connect", "smtplib.connect"}}
    # ONNX Runtime's uploader resolves its host ~9 s after ONNX Runtime initializes (1.32, measured):
    # a process that imported it lives this long after, or its silence would prove nothing
    UPLOADER_DELAY_S = 11.0
    seen, ort_imported = [], []

    def hook(event, args):
        if event == "socket.connect":
            if args[0].family in (socket.AF_INET, socket.AF_INET6):
                seen.append([event, repr(args[1])])
        elif event in NETWORK:
            seen.append([event, repr(args[:2])])
        elif event == "subprocess.Popen" and "pip" in repr(args[1]):
            seen.append([event, repr(args[1])])
        elif event == "import" and args[0] == "onnxruntime" and not ort_imported:
            ort_imported.append(time.monotonic())

    sys.addaudithook(hook)
    report, runs = sys.argv[1], json.loads(sys.argv[2])
    codes = []
    for argv in runs:
        sys.argv = ["visionbatch", *argv]
        try:
            runpy.run_module("visionbatch", run_name="__main__", alter_sys=True)
        except SystemExit as exc:  # visionbatch/__main__.py ends in sys.exit(main())
            codes.append(exc.code)
    if ort_imported:
        time.sleep(max(0.0, ort_imported[0] + UPLOADER_DELAY_S - time.monotonic()))
    during = list(seen)
    try:  # both witnesses must see this one, or their silence above proves nothing
        socket.getaddrinfo("{SENTINEL_HOST}", 80)
    except OSError:
        pass
    with open(report, "w") as fh:
        json.dump({{"codes": codes, "during": during, "after": seen[len(during):],
                   "onnxruntime": bool(ort_imported)}}, fh)
    """
)


@dataclasses.dataclass
class Run:
    """A fresh process running visionbatch commands under both witnesses."""

    folder: Path
    proc: subprocess.Popen

    @property
    def work(self) -> Path:
        return self.folder / "work"

    def wait(self) -> dict:
        """Wait for the process; its audit report plus `native`: the shim's lines, pids stripped."""
        _, stderr = self.proc.communicate(timeout=600)
        assert self.proc.returncode == 0, stderr[-3000:]
        report = json.loads((self.folder / "audit.json").read_text())
        log = self.folder / "net.log"
        lines = log.read_text().splitlines() if log.exists() else []
        report["native"] = [line.split(" ", 1)[1] for line in lines]
        return report


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native witness, built with this machine's C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or gcc) on PATH to build the LD_PRELOAD network shim")
    folder = tmp_path_factory.mktemp("netshim")
    source = folder / "netshim.c"
    source.write_text(SHIM_C)
    library = folder / "netshim.so"
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wall", "-o", str(library), str(source), "-ldl"],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    return library


def clean_env(folder: Path, shim: Path) -> dict[str, str]:
    """This environment as on a fresh machine: home and caches in `folder`, no YOLO/Ultralytics/ORT settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "ULTRALYTICS_", "ORT_"))}
    env.update(HOME=str(folder / "home"), XDG_CACHE_HOME=str(folder / "cache"),
               XDG_CONFIG_HOME=str(folder / "cfg"), LD_PRELOAD=str(shim), **{LOG_ENV: str(folder / "net.log")})
    return env


def start(shim: Path, folder: Path, *runs: list[str]) -> Run:
    """Start `python -m visionbatch ARGV` for each argv in `runs`, in one fresh process working in `folder`/work."""
    (folder / "work").mkdir(parents=True)
    (folder / "home").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", AUDIT, str(folder / "audit.json"), json.dumps(list(runs))],
                            cwd=folder / "work", env=clean_env(folder, shim), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return Run(folder, proc)


def assert_offline(run: Run, report: dict, codes: list[int]) -> None:
    assert report["codes"] == codes
    assert report["during"] == []  # no Python-level lookup, connection or pip run
    assert report["native"][:-1] == []  # no native lookup or inet connection (ONNX Runtime's telemetry among them)
    # the deliberate last lookup reached both witnesses: they were watching this process
    assert report["native"][-1:] == [SENTINEL]
    assert [event for event, _ in report["after"]] == ["socket.getaddrinfo"]
    # and nothing wrote a telemetry store (ONNX Runtime's goes to $XDG_CACHE_HOME or ~/.cache /Microsoft)
    assert not (run.folder / "home" / ".cache" / "Microsoft").exists()
    assert [str(p) for p in run.folder.rglob("Microsoft")] == []


def test_the_shim_sees_and_refuses_lookups_and_connections(shim: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import socket
        attempts = [
            lambda: socket.getaddrinfo("x.invalid", 80),
            lambda: socket.gethostbyname("y.invalid"),
            lambda: socket.socket(socket.AF_INET).connect(("127.0.0.1", 9)),
            lambda: socket.socket(socket.AF_INET6).connect(("::1", 9)),
            lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 53)),
        ]
        for attempt in attempts:
            try:
                attempt()
                print("went through")
            except OSError as exc:
                print(type(exc).__name__)
        left, right = socket.socketpair()  # AF_UNIX: local, allowed
        left.sendall(b"ok")
        print(right.recv(2).decode())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env=clean_env(tmp_path, shim), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["gaierror", "gaierror", "ConnectionRefusedError", "ConnectionRefusedError",
                                   "OSError", "ok"]
    lines = [line.split(" ", 1)[1] for line in (tmp_path / "net.log").read_text().splitlines()]
    assert lines == ["getaddrinfo x.invalid 80", "getaddrinfo y.invalid -", "connect 127.0.0.1 9", "connect ::1 9",
                     "sendto 127.0.0.1 53"]


def test_training_makes_no_network_attempt(shim: Path, make_shapes, tmp_path: Path) -> None:
    """Two real training runs in one fresh process: the second runs after the first gave everything back."""
    args = ["train", str(make_shapes(4, 2, dense=False)), "epochs=1", "imgsz=64", "batch=4", "name=audit",
            "task=segment"]
    run = start(shim, tmp_path / "train", args, args)
    assert_offline(run, run.wait(), [0, 0])
    # the second run went to a new folder: nothing of the first was overwritten
    runs = sorted(p.name for p in (run.work / "runs" / "segment").iterdir())
    assert runs == ["audit", "audit-2"]
    assert all((run.work / "runs" / "segment" / r / SUMMARY_NAME).is_file() for r in runs)
    # Ultralytics' settings and font went to visionbatch's own folder, not the user's config
    assert (run.folder / "cache" / "visionbatch" / "Ultralytics" / "Arial.ttf").is_file()
    assert not (run.folder / "cfg" / "Ultralytics").exists()


@pytest.mark.parametrize("command, args, output", [
    pytest.param("fit", ["memory_budget=8GiB", "imgsz=64", "labels_per_image=4"], "fit/fit/plan.json", id="fit"),
    pytest.param("sweep", ["sizes=64,96", "memory_budget=8GiB", "labels_per_image=4"], "sweep/sweep/sweep.json",
                 id="sweep"),
    pytest.param("augcost", ["imgsz=64", "sizes=64", "images=4", "loader_workers=0", "loader_cache=False",
                             "seconds=0.2", "step_img_per_s=40", "repeats=1"], "augcost/augcost/augcost.json",
                 id="augcost"),
])
def test_command_makes_no_network_attempt(shim: Path, make_shapes, tmp_path: Path, command: str, args: list[str],
                                          output: str) -> None:
    if command == "augcost":  # a pipeline file too: `import albumentations` asks PyPI for a version unless told not to
        pipeline = tmp_path / "aug.json"
        pipeline.write_text('{"__version__": "2.0.8", "transform": {"__class_fullname__": "Compose", "p": 1.0, '
                            '"transforms": [{"__class_fullname__": "Blur", "p": 0.5}]}}')
        args = [*args, f"pipeline={pipeline}"]
    run = start(shim, tmp_path / command, [command, str(make_shapes(4, 2, dense=False)), *args])
    assert_offline(run, run.wait(), [0])
    assert (run.work / "runs" / output).is_file()


@pytest.fixture(scope="module")
def infer_runs(shim: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Run, Run]]:
    """(a bad-input infer run, a real infer sweep), each a fresh process, started together."""
    folder = tmp_path_factory.mktemp("infer-audit")
    bad = start(shim, folder / "bad", ["infer", "yolo11n.yaml", "imgsz=300", "device=cpu"])
    good = start(shim, folder / "good", ["infer", "yolo11n.yaml", "imgsz=64", "batch_sizes=1,2", "runs=3",
                                         "warmup=1", "seconds=0.01", "device=cpu", "name=audit",
                                         # INT8 quantisation and Ultralytics' validator on each ONNX, offline too
                                         "precision=fp32,int8", f"data={SHAPES_YAML}", "calib_images=4"])
    try:
        yield bad, good
    finally:
        for run in (bad, good):
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


@pytest.fixture(scope="module", autouse=True)
def _infer_runs_start_with_the_module(request: pytest.FixtureRequest) -> None:
    """The infer runs spend ~11 s asleep (ONNX Runtime's uploader delay): started first, they sleep while the other
    tests here run, and their test only collects them."""
    if any(item.name == "test_infer_makes_no_network_attempt" for item in request.session.items):
        request.getfixturevalue("infer_runs")


def test_infer_makes_no_network_attempt(infer_runs: tuple[Run, Run]) -> None:
    """A real sweep (export, then ONNX Runtime) and a bad-input run, both in fresh processes, side by side.

    They run at once because each then waits for ONNX Runtime's uploader delay, mostly asleep.
    """
    bad, good = infer_runs
    for run, codes in ((bad, [2]), (good, [0])):
        report = run.wait()
        assert report["onnxruntime"]  # ONNX Runtime was loaded: the silence below is about it
        assert_offline(run, report, codes)
    assert not (bad.work / "runs").exists()
    plan = json.loads((good.work / "runs" / "infer" / "audit" / "plan.json").read_text())
    assert [r["precision"] for r in plan["precisions"]["results"]] == ["fp32", "int8"]
