"""The Python that runs on the remote host, sent as data over stdin (never spliced into
a shell command): kernelspec discovery and the supervisor ("nanny") of one kernel."""

from __future__ import annotations

import json
import shlex

__all__ = ["DISCOVERY", "NANNY", "bootstrap_command", "first_lines"]

# The only command line the remote shell sees: the configured interpreter (quoted) and
# a constant program that reads the real program from the first line of stdin.
_BOOTSTRAP = "import sys, json; exec(json.loads(sys.stdin.readline()))"


def bootstrap_command(python: str) -> str:
    """``<python> -u -c <bootstrap>``, every part quoted for the remote shell."""
    return " ".join(shlex.quote(p) for p in (python, "-u", "-c", _BOOTSTRAP))


def first_lines(program: str, config: object | None = None) -> str:
    """What to write to the bootstrap's stdin: the program, then its config (JSON lines)."""
    lines = [json.dumps(program)]
    if config is not None:
        lines.append(json.dumps(config))
    return "\n".join(lines) + "\n"


# Lists the host's kernelspecs as `jupyter kernelspec list --json` would; without
# jupyter_client, offers this Python if it has ipykernel.
DISCOVERY = r'''
import json, sys, os, socket
out = {"hostname": socket.gethostname(), "kernelspecs": {}}
# As jupyter_client starts them: a bare "python" is the Python that lists them.
bare = {"python", "python%i" % sys.version_info[0], "python%i.%i" % sys.version_info[:2]}
try:
    from jupyter_client.kernelspec import KernelSpecManager
    for name, item in KernelSpecManager().get_all_specs().items():
        argv = item.get("spec", {}).get("argv") or []
        if argv and argv[0] in bare:
            argv[0] = sys.executable
        out["kernelspecs"][name] = item
except Exception:
    try:
        import ipykernel
        out["kernelspecs"]["python3"] = {"resource_dir": "", "spec": {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"}}
    except ImportError:
        pass
sys.stdout.write(json.dumps(out) + "\n")
'''

# Starts the kernel in its own process group, reports {"pid", "cwd"} and {"exit"} on
# stdout, relays {"signal": n} from stdin to the group, forwards the kernel's output to
# stderr, ends the kernel when stdin closes (the SSH channel or connection went away),
# and removes the kernel's connection file and its folder once the kernel ended.
NANNY = r'''
import json, os, signal, socket, subprocess, sys, threading, time
config = json.loads(sys.stdin.readline())
env = dict(os.environ)
env.update(config["env"])
def workdir(wanted):
    # A client's cwd names a folder on the client's machine (jupyter_server's notebook
    # folder): used where this host has it too (a shared filesystem), else the folder
    # sshd started this login in (the home; "/" if the home is missing).
    home = os.getcwd()
    if not wanted:
        return home
    path = os.path.join(home, wanted)  # a relative one from there, as ssh would
    if os.path.isdir(path) and os.access(path, os.X_OK):
        return path
    why = "is not a folder you can enter" if os.path.exists(path) else "does not exist"
    sys.stderr.write("[kernel-providers: cwd %s %s on %s; the kernel runs in %s]\n"
                     % (wanted, why, socket.gethostname(), home))
    sys.stderr.flush()
    return home
cwd = workdir(config.get("cwd"))
try:
    kernel = subprocess.Popen(config["argv"], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
except OSError as exc:
    sys.stderr.write("cannot start %s: %s\n" % (config["argv"][0], exc))
    sys.stdout.write(json.dumps({"exit": 127}) + "\n")
    sys.exit(0)
lock = threading.Lock()
def say(message):
    with lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
def pump():
    for chunk in iter(lambda: kernel.stdout.read1(4096), b""):
        sys.stderr.buffer.write(chunk)
        sys.stderr.buffer.flush()
def group(signum):
    try:
        os.killpg(kernel.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
def control():
    for line in sys.stdin:
        try:
            group(int(json.loads(line)["signal"]))
        except (ValueError, KeyError):
            pass
    # stdin closed: the manager is gone; so goes the kernel
    group(signal.SIGTERM)
    deadline = time.time() + 3
    while kernel.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    group(signal.SIGKILL)
pumping = threading.Thread(target=pump, daemon=True)
pumping.start()
threading.Thread(target=control, daemon=True).start()
say({"pid": kernel.pid, "cwd": cwd})
status = kernel.wait()
pumping.join(5)  # the kernel's last words before its exit status
group(signal.SIGKILL)
# The connection file and the folder made for it go with the kernel, also when the
# manager cannot remove them: its connection was lost.
file = config["file"]
for remove, target in ((os.remove, file), (os.rmdir, os.path.dirname(file))):
    try:
        remove(target)
    except OSError:
        pass
say({"exit": status})
'''
