"""The program a Slurm job runs on its compute node (Python stdlib only: it runs with
the cluster's Python, not ours). Copied into the job's folder and started by the batch
script as ``python3 -u nanny.py JOB_DIR``.

It reads ``request.json`` (the kernel, the key, env, cwd) from the job folder, picks
five free ports on the node's loopback, writes the kernel's connection file (0600) in a
private folder of the node's own, starts the kernel in its own process group and writes
``started.json`` (host, Slurm node name, ports) to the job folder. It forwards the
signals Slurm delivers (``scancel --batch --signal``) to the kernel's group, ends the
kernel when the launcher stops renewing its lease (``lease``'s mtime stops changing:
the launching side is gone), and when the kernel ends writes ``exit.json`` with its status and
removes its connection file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

BARE_PYTHONS = {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGUSR1, signal.SIGUSR2)
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def write(job_dir: str, name: str, data: Any) -> None:
    """Write ``data`` as JSON to ``job_dir/name``, 0600, atomically."""
    temporary = os.path.join(job_dir, f".{name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(temporary, os.path.join(job_dir, name))


def ports_for(wanted: dict[str, int]) -> dict[str, int]:
    """The five ports: those ``wanted`` (a client's own connection file), else free ones
    of the node's loopback."""
    sockets = [socket.socket() for _ in PORT_NAMES]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        free = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return {name: int(wanted.get(name) or free[i]) for i, name in enumerate(PORT_NAMES)}


def kernel_argv(kernel: str | list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv of ``kernel`` and the variables it sets: an argv as is, an environment
    folder's Python with ipykernel, or a kernelspec of this node (jupyter_client's, else
    python3 itself)."""
    if isinstance(kernel, list):
        return list(kernel), {}
    ipykernel = ["-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if "/" in kernel:
        return [os.path.join(os.path.expanduser(kernel), "bin", "python"), *ipykernel], {}
    host = socket.gethostname()
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError:
        if kernel in BARE_PYTHONS:
            return [sys.executable, *ipykernel], {}
        raise LookupError(f"no kernelspec {kernel!r} on {host} (jupyter_client is not"
                          " installed there)") from None
    try:
        spec = KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        if kernel in BARE_PYTHONS:
            return [sys.executable, *ipykernel], {}
        raise LookupError(f"no kernelspec {kernel!r} on {host} (`jupyter kernelspec list`"
                          " there shows the names)") from None
    argv = list(spec.argv)
    if argv and argv[0] in BARE_PYTHONS:  # as jupyter_client starts them
        argv[0] = sys.executable
    return argv, {str(k): str(v) for k, v in (spec.env or {}).items()}


class Kernel:
    """The kernel process, in its own process group."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self.ending = 0.0  # when the end was asked for (TERM), 0 before
        self.terminated = False  # Slurm sent TERM (a time limit, scancel, preemption)

    def group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def forward(self, signum: int, frame: object) -> None:
        self.group(signum)
        if signum == signal.SIGTERM:  # Slurm ends the job
            self.terminated = True
            self.end()

    def end(self) -> None:
        """TERM now, KILL 3 s later (see ``supervise``)."""
        if not self.ending:
            self.group(signal.SIGTERM)
            self.ending = time.monotonic()

    def supervise(self, job_dir: str, lease_seconds: float) -> int:
        """Wait for the kernel's end, ending it once the lease is stale (killing it when
        a ``kill`` file appears: SIGKILL cannot be forwarded); its status.

        The lease is stale when its mtime has not changed for ``lease_seconds`` of this
        process's monotonic clock: never compared with the wall clock, which may differ
        from the one that set the mtime (a file server's, another host's) or jump."""
        lease, kill = os.path.join(job_dir, "lease"), os.path.join(job_dir, "kill")
        seen: tuple[int, int] | None = None
        renewed = time.monotonic()
        while self.process.poll() is None:
            time.sleep(0.1)
            if os.path.exists(kill):
                self.group(signal.SIGKILL)
            try:
                with open(lease) as f:  # (opening revalidates a network file system's view)
                    detached = f.read(16) == "detached"  # no process holds it for now
                    info = os.fstat(f.fileno())
                if (info.st_mtime_ns, info.st_size) != seen:
                    seen, renewed = (info.st_mtime_ns, info.st_size), time.monotonic()
                age = time.monotonic() - renewed
                stale = not detached and age > lease_seconds
                why = f"not renewed for {age:.1f} s, more than {lease_seconds:g} s"
            except OSError as exc:
                stale = True  # the launcher removed the folder: done with the kernel
                why = f"{exc.strerror or exc}"
            if stale and not self.ending:
                sys.stderr.write(f"kernel-providers: the launcher's lease ended ({why});"
                                 " ending the kernel\n")
                self.end()
            if self.ending and time.monotonic() - self.ending > 3:
                self.group(signal.SIGKILL)
        self.group(signal.SIGKILL)  # what the kernel started
        return int(self.process.returncode)


def connection_file(request: dict[str, Any], ports: dict[str, int]) -> str:
    """The kernel's connection file, 0600 in a private folder of the node's own."""
    path = os.path.join(tempfile.mkdtemp(prefix="kernel-providers-"), "kernel.json")
    info = dict(ports, ip="127.0.0.1", key=request["key"], transport="tcp",
                signature_scheme="hmac-sha256", kernel_name=request.get("kernel_name", ""))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    return path


def main(job_dir: str) -> int:
    with open(os.path.join(job_dir, "request.json")) as f:
        request = json.load(f)
    host = socket.gethostname()
    try:
        argv, spec_env = kernel_argv(request["kernel"])
    except LookupError as exc:
        sys.stderr.write(f"kernel-providers: {exc}\n")
        write(job_dir, "exit.json", {"status": 2, "error": str(exc)})
        return 2
    ports = ports_for(request.get("ports") or {})
    path = connection_file(request, ports)
    env = {**os.environ, **spec_env, **(request.get("env") or {})}
    cwd = request.get("cwd")
    try:
        kernel = Kernel([a.replace("{connection_file}", path) for a in argv], env,
                        cwd if cwd and os.path.isdir(cwd) else os.getcwd())
    except OSError as exc:
        sys.stderr.write(f"kernel-providers: cannot start {argv[0]} on {host}: {exc}\n")
        write(job_dir, "exit.json", {"status": 127, "error": f"cannot start {argv[0]}:"
                                     f" {exc}"})
        return 127
    for signum in FORWARDED:
        signal.signal(signum, kernel.forward)
    write(job_dir, "started.json", {"host": host, "ports": ports, "pid": kernel.process.pid,
                                    "node": os.environ.get("SLURMD_NODENAME", host)})
    status = kernel.supervise(job_dir, float(request.get("lease_seconds", 20)))
    for remove, target in ((os.remove, path), (os.rmdir, os.path.dirname(path))):
        with contextlib.suppress(OSError):
            remove(target)
    with contextlib.suppress(OSError):  # (the launcher may have removed the folder)
        write(job_dir, "exit.json", {"status": status, "terminated": kernel.terminated})
    return status if 0 <= status < 256 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
