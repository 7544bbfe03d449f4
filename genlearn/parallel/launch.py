"""Start a multi-process run on this machine: ``python -m genlearn.parallel.launch``.

Usage::

    python -m genlearn.parallel.launch --num-processes 2 [--port 0] [--timeout 60] -- \\
        python train.py --my-args

starts ``--num-processes`` copies of the command with ``GENLEARN_COORDINATOR``
(``127.0.0.1:<port>``, a free port when ``--port 0``), ``GENLEARN_NUM_PROCESSES``
and ``GENLEARN_PROCESS_ID`` set; the command calls
`genlearn.parallel.initialize()` first. If one process fails the others are
killed; the exit status is the first non-zero status (0 when all succeed), and
a process that exceeds ``--timeout`` seconds is killed too (status 124). On CPU
each process sees its own host devices, and the collectives go over gloo.
For several machines, run the command yourself on each with the variables set.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from genlearn.parallel.distributed import ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID

__all__ = ["free_port", "launch", "main"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    command: Sequence[str],
    num_processes: int,
    *,
    port: int = 0,
    timeout: Optional[float] = None,
    env: Optional[dict] = None,
) -> int:
    """Run ``command`` as ``num_processes`` processes of one JAX run; see module doc.

    Returns:
      The exit status (0 if every process succeeded).

    Raises:
      ValueError: empty command, ``num_processes < 1`` or a bad port.
    """
    command = list(command)
    if not command:
        raise ValueError("no command to launch (put it after --)")
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if not 0 <= int(port) < 65536:
        raise ValueError(f"port must be in 0..65535, got {port}")
    port = int(port) or free_port()
    base = dict(os.environ if env is None else env)
    base[ENV_COORDINATOR] = f"127.0.0.1:{port}"
    base[ENV_NUM_PROCESSES] = str(num_processes)
    procs = []
    for pid in range(num_processes):
        proc_env = dict(base, **{ENV_PROCESS_ID: str(pid)})
        procs.append(subprocess.Popen(command, env=proc_env))
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    status = 0
    try:
        # poll every process each round (a bare any() would stop at the first
        # running one and never see a later process fail)
        while None in [p.poll() for p in procs]:
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0]
                break
            if deadline is not None and time.monotonic() > deadline:
                status = 124
                break
            time.sleep(0.05)
        else:
            status = next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1:]
    else:
        own, command = argv, []
    parser = argparse.ArgumentParser(
        prog="python -m genlearn.parallel.launch",
        description="Run a command as N processes of one jax.distributed run on this machine.",
    )
    parser.add_argument("--num-processes", "-n", type=int, required=True)
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument("--timeout", type=float, default=None, help="kill all after this many s")
    args = parser.parse_args(own)
    if not command:
        parser.error("no command: put it after --, e.g. -- python train.py")
    try:
        return launch(command, args.num_processes, port=args.port, timeout=args.timeout)
    except ValueError as err:
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
