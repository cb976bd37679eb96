"""Multi-host jobs on JAX's own runtime: one process per host joins a job before any JAX work.

Every process runs the same program; `jax.distributed.initialize` connects them through a
coordinator (process 0's host:port) and the task mesh then spans every device of every
process, so each process computes (and samples) only its share of a step's tasks. Settings
learned the hard way on jax 0.10.2, each made explicit here:

- the coordinator binds to `0.0.0.0:PORT` (jax's default, `[::]`, fails where IPv6 is off);
- cluster auto-detection is off when the job is described explicitly (a SLURM variable in
  the environment would otherwise override what the user gave);
- JAX's preemption service is off: it catches SIGTERM to reach a sync point this library
  never asks for, so a scheduler's SIGTERM would be swallowed; checkpoints cover preemption;
- a dead peer is noticed within `heartbeat_s`, and the others abort instead of waiting;
- processes wait at exit for the slowest one (the lead writes the report alone), so the
  shutdown wait is long: a dead peer ends it through the heartbeat, not the timeout.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax

from metalearn.core.errors import UserError

ENV = {
    "coordinator": "METALEARN_COORDINATOR",
    "num_processes": "METALEARN_NUM_PROCESSES",
    "process_id": "METALEARN_PROCESS_ID",
}


@dataclasses.dataclass(frozen=True)
class Cluster:
    """One process's place in a multi-host job."""

    coordinator: str  # process 0's HOST:PORT, reachable from every host
    num_processes: int
    process_id: int
    timeout_s: int = 300  # how long to wait for every process to join
    heartbeat_s: int = 30  # a peer silent this long is taken for dead
    shutdown_s: int = 7 * 24 * 3600  # how long to wait at exit for the others

    def __post_init__(self) -> None:
        host, _, port = self.coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"coordinator must be HOST:PORT, got {self.coordinator!r}")
        if self.num_processes < 1:
            raise UserError(f"num_processes must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise UserError(
                f"process_id must be in 0..{self.num_processes - 1}, got {self.process_id}"
            )
        for name in ("timeout_s", "heartbeat_s", "shutdown_s"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1 second, got {getattr(self, name)}")

    @property
    def port(self) -> int:
        return int(self.coordinator.rpartition(":")[2])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Cluster | None:
        """The job described by METALEARN_COORDINATOR, _NUM_PROCESSES and _PROCESS_ID (all
        three, or none: None)."""
        given = {k: environ[v] for k, v in ENV.items() if environ.get(v)}
        if not given:
            return None
        if len(given) < len(ENV):
            missing = [ENV[k] for k in ENV if k not in given]
            raise UserError(f"a multi-host job needs {', '.join(ENV.values())}; missing {missing}")
        for key in ("num_processes", "process_id"):
            if not given[key].lstrip("-").isdigit():
                raise UserError(f"{ENV[key]} must be an integer, got {given[key]!r}")
        return cls(given["coordinator"], int(given["num_processes"]), int(given["process_id"]))


def initialize(cluster: Cluster | None = None) -> None:
    """Join the multi-host job `cluster` describes (else the one METALEARN_* describes, else,
    when JAX_COORDINATOR_ADDRESS is set, the one JAX detects: SLURM, Open MPI, ...). A no-op
    for one process, or when this process has joined already."""
    cluster = cluster or Cluster.from_env()
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_enable_preemption_service", False)
    if cluster is None:
        if os.environ.get("JAX_COORDINATOR_ADDRESS"):
            jax.distributed.initialize()
        return
    if cluster.num_processes == 1:
        return
    jax.distributed.initialize(
        coordinator_address=cluster.coordinator,
        num_processes=cluster.num_processes,
        process_id=cluster.process_id,
        coordinator_bind_address=f"0.0.0.0:{cluster.port}",
        cluster_detection_method="deactivate",
        initialization_timeout=cluster.timeout_s,
        heartbeat_timeout_seconds=cluster.heartbeat_s,
        shutdown_timeout_seconds=cluster.shutdown_s,
    )


def is_lead() -> bool:
    """Whether this process writes the job's files (process 0; always true on one host)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process of the job gets here (a no-op on one host)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_copy(tree: Any) -> Any:
    """`tree` as numpy arrays whole on this host: in a multi-host job, the arrays of a step
    span every process, and one process alone (the lead writing a report) cannot compute
    with them. The identity on one host."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
