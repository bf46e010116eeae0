"""The kernelspec shim: ``python -m kernel_providers_jupyter.shim <id> -f <connection file>``.

The argv of every kernelspec ``kernel-providers jupyter sync`` writes, for clients that
run a kernelspec's argv themselves (``jupyter console``, papermill, VS Code ...). The
provider's kernel answers on exactly the ports, key, transport and address of the
connection file the client wrote:

- a kernel on this machine *becomes* this process (``exec``), reading the client's file:
  nothing stays between client and kernel, signals reach the kernel directly;
- a kernel elsewhere (a container, a remote host) is supervised from here: SIGINT
  interrupts it (signal or message mode, as its type needs), SIGTERM and SIGHUP shut it
  down and clean up, and when it ends this process exits with its status. If this
  process is killed outright, the provider's orphan rules apply (container labels and
  ``kernel-providers cleanup``, the SSH supervisor ending on channel loss).

A kernel on this machine started this way before, from the same folder with the same
environment, starts again from its exec plan without discovery, as long as nothing it
depends on changed (:mod:`kernel_providers.exec_plans`): that keeps the shim's cost
close to a bare interpreter start.

Exit status: the kernel's (a kernel killed by signal N ends this process by signal N);
2 for an unknown kernel id or bad arguments; 3 when the kernel could not start.
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]


def _synced_form(argv: list[str]) -> tuple[str, str] | None:
    """(kernel id, connection file) when ``argv`` is the form synced kernelspecs use."""
    if len(argv) == 3 and argv[1] in ("-f", "--connection-file") \
            and not argv[0].startswith("-"):
        return argv[0], argv[2]
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the shim; returns the exit status (or ends by the kernel's signal)."""
    argv = sys.argv[1:] if argv is None else argv
    synced = _synced_form(argv)
    if synced is not None and os.path.isfile(synced[1]):
        # Only this module and exec_plans are imported yet: a valid plan execs at once.
        from kernel_providers.exec_plans import replay

        replay(synced[0], os.path.abspath(synced[1]))  # returns if there is none

    import argparse
    import asyncio
    import signal

    from .supervisor import EXIT_USAGE, run, say

    parser = argparse.ArgumentParser(
        prog="python -m kernel_providers_jupyter.shim",
        description="Start a kernel-providers kernel on a Jupyter client's connection file.")
    parser.add_argument("kernel_id", help="the kernel-providers id, e.g. docker/img:1.2")
    parser.add_argument("-f", "--connection-file", required=True,
                        help="the connection file the client wrote")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.connection_file):
        say(f"connection file {args.connection_file} does not exist; a Jupyter client"
            " writes it and passes it as -f {connection_file}")
        return EXIT_USAGE
    status = asyncio.run(run(args.kernel_id, os.path.abspath(args.connection_file)))
    if status is None:
        say(f"the connection to kernel {args.kernel_id!r} was lost; its status is unknown")
        return 1
    if status < 0:  # killed by a signal: end the same way, as the client expects
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


if __name__ == "__main__":
    sys.exit(main())
