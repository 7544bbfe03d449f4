"""Multi-process (multi-host) start-up: `jax.distributed.initialize` with checks.

Each process of a run calls `initialize` once, before any other JAX call. The
coordinator address, the number of processes and this process's id come from
the arguments or, when omitted, from the environment variables
``GENLEARN_COORDINATOR`` (``host:port``), ``GENLEARN_NUM_PROCESSES`` and
``GENLEARN_PROCESS_ID`` (set by ``python -m genlearn.parallel.launch``). After
it, `jax.devices()` lists the devices of all processes, `make_mesh` spans them,
and each process feeds its own rows with `shard_batch`.

JAX aborts the whole process (a C++ fatal error, not a Python exception) when
the coordinator cannot be reached within ``initialization_timeout``. So before
handing over, a non-coordinator process checks that the coordinator's port
accepts TCP connections and raises a `TimeoutError` naming the address if it
does not within ``timeout`` seconds.
"""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple, Optional

import jax

__all__ = ["DistributedConfig", "initialize", "config_from_env", "ENV_COORDINATOR",
           "ENV_NUM_PROCESSES", "ENV_PROCESS_ID"]

ENV_COORDINATOR = "GENLEARN_COORDINATOR"
ENV_NUM_PROCESSES = "GENLEARN_NUM_PROCESSES"
ENV_PROCESS_ID = "GENLEARN_PROCESS_ID"


class DistributedConfig(NamedTuple):
    """Where the coordinator is and who this process is."""

    coordinator_address: str
    num_processes: int
    process_id: int


def _parse_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be an integer, got {value!r}") from err


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = str(address).rpartition(":")
    if not sep or not host:
        raise ValueError(f"coordinator address must be 'host:port', got {address!r}")
    port = _parse_int(f"port of coordinator address {address!r}", port)
    if not 0 < port < 65536:
        raise ValueError(f"coordinator port must be in 1..65535, got {port}")
    return host.strip("[]"), port


def config_from_env(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
) -> DistributedConfig:
    """Fill the missing arguments from the ``GENLEARN_*`` variables and check them.

    Raises:
      ValueError: a value is missing from both, not an integer, or out of range
        (``num_processes >= 1``, ``0 <= process_id < num_processes``, address
        ``host:port``).
    """
    values = {}
    for name, arg, env in (
        ("coordinator address", coordinator_address, ENV_COORDINATOR),
        ("num_processes", num_processes, ENV_NUM_PROCESSES),
        ("process_id", process_id, ENV_PROCESS_ID),
    ):
        if arg is None:
            arg = os.environ.get(env)
        if arg is None or arg == "":
            raise ValueError(f"{name} is not set: pass it or set the environment variable {env}")
        values[name] = arg
    address = str(values["coordinator address"])
    _split_address(address)
    n = _parse_int("num_processes", values["num_processes"])
    pid = _parse_int("process_id", values["process_id"])
    if n < 1:
        raise ValueError(f"num_processes must be >= 1, got {n}")
    if not 0 <= pid < n:
        raise ValueError(f"process_id must be in [0, {n}) for num_processes={n}, got {pid}")
    return DistributedConfig(address, n, pid)


def _wait_for_port(address: str, timeout: float) -> None:
    host, port = _split_address(address)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(1.0, timeout)):
                return
        except OSError as err:
            last = err
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"coordinator {address} unreachable: no connection within {timeout:g} s "
                f"({type(last).__name__}: {last}); is process 0 running and is "
                f"{ENV_COORDINATOR} right?"
            )
        time.sleep(0.1)


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    *,
    timeout: float = 300.0,
    local_device_ids=None,
) -> DistributedConfig:
    """Join a multi-process JAX run (`jax.distributed.initialize`), with checks.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator service;
        default ``$GENLEARN_COORDINATOR``.
      num_processes: default ``$GENLEARN_NUM_PROCESSES``.
      process_id: this process, in ``[0, num_processes)``; default
        ``$GENLEARN_PROCESS_ID``.
      timeout: seconds to wait for the coordinator (non-coordinator processes
        raise `TimeoutError` after it) and JAX's ``initialization_timeout``
        (integer seconds, at least 1) for all processes to register.
      local_device_ids: passed to `jax.distributed.initialize`.

    Returns:
      The `DistributedConfig` used. With ``num_processes == 1`` nothing is
      started (a plain single-process run).

    Raises:
      ValueError: missing or out-of-range settings (see `config_from_env`).
      TimeoutError: the coordinator did not accept connections in time.
      RuntimeError: JAX is already initialised as part of another run.
    """
    try:
        timeout = float(timeout)
    except (TypeError, ValueError) as err:
        raise ValueError(f"timeout must be a number of seconds, got {timeout!r}") from err
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    config = config_from_env(coordinator_address, num_processes, process_id)
    if config.num_processes == 1:
        return config
    # Not jax.process_count() before initialising: it would start the backend.
    if _already_initialized():
        if (jax.process_count(), jax.process_index()) == (config.num_processes, config.process_id):
            return config
        raise RuntimeError(
            f"jax.distributed is already initialised as process {jax.process_index()} "
            f"of {jax.process_count()}"
        )
    if config.process_id != 0:
        _wait_for_port(config.coordinator_address, timeout)
    jax.distributed.initialize(
        coordinator_address=config.coordinator_address,
        num_processes=config.num_processes,
        process_id=config.process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=max(1, int(round(timeout))),
    )
    return config


def _already_initialized() -> bool:
    try:
        from jax._src import distributed as _dist
    except ImportError:  # pragma: no cover - layout of a future jax
        return False
    return getattr(_dist.global_state, "client", None) is not None
