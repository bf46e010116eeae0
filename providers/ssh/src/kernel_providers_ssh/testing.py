"""A real OpenSSH server for tests and benchmarks: a container of the test image
(Debian openssh-server + python3-ipykernel, see scripts/build-test-image) published on
a loopback port, a client key made here, its host key in a private known_hosts, and an
ssh_config naming it ``testbox`` (plus ``deadbox``, a closed port). Needs the docker SDK.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SSHD", "LocalSSHD", "start_local_sshd", "start_sshd"]

# Runs in the container as its command: sshd's keys and login, a kernelspec that exits
# at once (for the failure test), then sshd in the foreground.
SETUP = r"""
set -e
mkdir -p /run/sshd /root/.ssh /usr/local/share/jupyter/kernels/exits
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
cat > /usr/local/share/jupyter/kernels/exits/kernel.json <<'JSON'
{"argv": ["python3", "-c", "print('ssh-exits-marker'); raise SystemExit(6)"],
 "display_name": "Exits", "language": "python"}
JSON
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no
"""



@dataclass
class SSHD:
    """The test sshd: its container, port, and the client files pointing at it."""

    container: Any
    port: int
    ssh_config: Path
    known_hosts: Path
    key: Path
    python: str = "python3"  # the image's, with ipykernel

    def exec(self, *argv: str) -> str:
        """Run a command on the server's host (its container); its output."""
        return str(self.container.exec_run(list(argv)).output.decode())

    @property
    def hostname(self) -> str:
        """The host name kernels on this server see."""
        return str(self.container.short_id)

    @property
    def home(self) -> str:
        """The login user's home folder there."""
        return "/root"

    def alive(self, *pids: int) -> list[int]:
        """Those of ``pids`` that run (not zombies) on the server's host."""
        return _alive_on(self, pids)

    def kill_sessions(self) -> None:
        """Kill the server side of every SSH session (not the listening sshd, PID 1)."""
        self.exec("python3", "-c", _KILL_SESSIONS % (1, 1))

    def stop(self) -> None:
        """Remove the container."""
        self.container.remove(force=True)


# Kills the sshd session processes descended from the listener (its pid is given):
# never another sshd of the machine. OpenSSH >= 9.8 names them sshd-session.
_KILL_SESSIONS = (
    "import os, signal\nparent = {}\nname = {}\n"
    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
    " try:\n"
    "  stat = open('/proc/%%s/stat' %% p).read()\n"
    " except OSError:\n  continue\n"
    " name[int(p)] = stat[stat.index('(') + 1:stat.rindex(')')]\n"
    " parent[int(p)] = int(stat[stat.rindex(')') + 2:].split()[1])\n"
    "def below(pid):\n"
    " while pid > 1:\n"
    "  pid = parent.get(pid, 0)\n"
    "  if pid == %d:\n   return True\n"
    " return False\n"
    "for pid in parent:\n"
    " if pid != %d and below(pid) and name[pid] in ('sshd', 'sshd-session'):\n"
    "  try:\n   os.kill(pid, signal.SIGKILL)\n  except OSError:\n   pass\n")


@dataclass
class LocalSSHD:
    """OpenSSH's sshd on 127.0.0.1 of this machine, for where no Docker engine runs:
    the same client files, logging in as the current user."""

    process: Any
    port: int
    ssh_config: Path
    known_hosts: Path
    key: Path

    def exec(self, *argv: str) -> str:
        """Run a command on this machine; its output."""
        import subprocess

        return subprocess.run(list(argv), capture_output=True, text=True).stdout

    @property
    def hostname(self) -> str:
        """This machine's host name."""
        return socket.gethostname()

    @property
    def python(self) -> str:
        """The Python with jupyter_client and ipykernel here: the tests' own (a login
        shell's PATH may put another first)."""
        return sys.executable

    @property
    def home(self) -> str:
        """The current user's home folder."""
        return str(Path.home())

    def alive(self, *pids: int) -> list[int]:
        """Those of ``pids`` that run (not zombies) on this machine."""
        return _alive_on(self, pids)

    def kill_sessions(self) -> None:
        """Kill the session processes this sshd forked (our own, by pid)."""
        import subprocess

        pid = self.process.pid
        subprocess.run(["python3", "-c", _KILL_SESSIONS % (pid, pid)], check=False)

    def stop(self) -> None:
        """Stop the sshd this test started."""
        self.process.terminate()
        self.process.wait(10)


def _client_files(folder: Path, port: int, host_key: str, key_file: Path,
                  user: str) -> tuple[Path, Path]:
    known_hosts = folder / "known_hosts"
    kind, blob = host_key.split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    config = folder / "ssh_config"
    config.write_text(
        f"Host testbox testbox2 unverified\n  HostName 127.0.0.1\n  Port {port}\n"
        f"  User {user}\n"
        f"  IdentityFile {key_file}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n\n"
        f"Host deadbox\n  HostName 127.0.0.1\n  Port {dead_port}\n  User root\n")
    return config, known_hosts


def _user() -> str:
    import getpass

    return getpass.getuser()


def start_local_sshd(folder: Path, sshd: str = "/usr/sbin/sshd") -> LocalSSHD:
    """Start ``sshd`` on a free loopback port as the current user (no root needed),
    accepting a key made here. The caller stops it."""
    import subprocess

    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(folder / "id_test"))
    os.chmod(folder / "id_test", 0o600)
    (folder / "authorized_keys").write_bytes(key.export_public_key())
    host = asyncssh.generate_private_key("ssh-ed25519")
    host.write_private_key(str(folder / "host_key"))
    os.chmod(folder / "host_key", 0o600)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exits = folder / "jupyter" / "kernels" / "exits"  # as the container's SETUP makes
    exits.mkdir(parents=True, exist_ok=True)
    (exits / "kernel.json").write_text(
        '{"argv": ["python3", "-c", "print(\'ssh-exits-marker\'); raise SystemExit(6)"],'
        ' "display_name": "Exits", "language": "python"}')
    if os.geteuid() == 0:  # as root, sshd wants its privilege-separation dir
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", "/dev/null", "-p", str(port), "-h", str(folder / "host_key"),
         "-o", "ListenAddress=127.0.0.1", "-o", f"AuthorizedKeysFile={folder}/authorized_keys",
         "-o", "PasswordAuthentication=no", "-o", "StrictModes=no", "-o", "PidFile=none",
         "-o", "PermitRootLogin=prohibit-password", "-o", "Subsystem=sftp internal-sftp",
         # sessions find the same Pythons as the tests (jupyter, ipykernel)
         "-o", f"SetEnv=PATH={os.environ.get('PATH', '/usr/bin:/bin')}"
               f" JUPYTER_PATH={folder / 'jupyter'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None:
            raise RuntimeError(f"{sshd} exited with status {process.returncode}")
        time.sleep(0.05)
    config, known_hosts = _client_files(folder, port, host.export_public_key().decode(),
                                        folder / "id_test", _user())
    return LocalSSHD(process, port, config, known_hosts, folder / "id_test")


def _answers_ssh(port: int) -> bool:
    """Whether sshd itself answers on 127.0.0.1:``port`` (its banner): Docker's proxy
    accepts a connection on a published port before sshd listens in the container, then
    drops it, so a mere TCP connect proves nothing."""
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
            return probe.recv(4).startswith(b"SSH-")
        except OSError:
            return False


def start_sshd(client: Any, image: str, folder: Path) -> SSHD:
    """Start the server from ``image`` with the docker SDK ``client``; client files go
    into ``folder``. The caller stops it."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(folder / "id_test"))
    os.chmod(folder / "id_test", 0o600)
    container = client.containers.run(
        image, ["sh", "-c", SETUP], detach=True,
        environment={"AUTHORIZED_KEY": key.export_public_key().decode().strip()},
        ports={"22/tcp": ("127.0.0.1", None)}, labels={"io.kernel-providers.test": "sshd"})
    try:
        for _ in range(200):
            container.reload()
            host_key = container.exec_run(["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).output
            ports = container.attrs["NetworkSettings"]["Ports"].get("22/tcp")
            if container.status == "running" and ports and host_key.startswith(b"ssh-"):
                port = int(ports[0]["HostPort"])
                if _answers_ssh(port):
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"test sshd did not start: {container.logs().decode()}")
        config, known_hosts = _client_files(folder, port, host_key.decode(),
                                            folder / "id_test", "root")
    except BaseException:
        container.remove(force=True)
        raise
    return SSHD(container, port, config, known_hosts, folder / "id_test")


@contextlib.contextmanager
def sshd_for_tests(folder: Path, image: str) -> Iterator[SSHD | LocalSSHD]:
    """An sshd a test owns: in a container of ``image`` (removed afterwards), or on
    127.0.0.1 of this machine with KP_TEST_SSHD=local or without an engine holding the
    image; :func:`kernel_providers.testing.unavailable` when neither can run."""
    from kernel_providers.testing import docker_image_problem, unavailable

    problem = ("KP_TEST_SSHD=local" if os.environ.get("KP_TEST_SSHD") == "local"
               else docker_image_problem(image))
    server: SSHD | LocalSSHD
    if problem is None:
        import docker

        client = docker.from_env()
        try:
            server = start_sshd(client, image, folder)
            try:
                yield server
            finally:
                server.stop()
        finally:
            client.close()
        return
    if not Path("/usr/sbin/sshd").exists():
        unavailable(f"neither a container sshd ({problem}) nor /usr/sbin/sshd")
    server = start_local_sshd(folder)
    try:
        yield server
    finally:
        server.stop()

# Prints those of its arguments (pids) that run and are not zombies.
_ALIVE = ("import sys\nfor pid in sys.argv[1:]:\n try:\n"
          "  state = open('/proc/%s/stat' % pid).read().rpartition(')')[2].split()[0]\n"
          " except OSError:\n  continue\n if state != 'Z':\n  print(pid)")


def _alive_on(server: SSHD | LocalSSHD, pids: tuple[int, ...]) -> list[int]:
    if not pids:
        return []
    return [int(p) for p in server.exec("python3", "-c", _ALIVE, *map(str, pids)).split()]

