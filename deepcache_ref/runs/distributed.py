"""Bookkeeping between the processes of one sampling run (torchrun or a plain srun).

Sampling needs no communication between GPUs: each rank samples its own batches. What the ranks
share (stop together, count images, wait for each other) goes through a gloo group on CPU tensors,
so the same code runs on CPU in the tests and on GPUs in production; NCCL is never used.
"""

import datetime
import hashlib
import os
import subprocess

import torch
import torch.distributed as dist

from ..errors import UserError

RENDEZVOUS_TIMEOUT = None  # seconds for all ranks to show up; None: $DEEPCACHE_RENDEZVOUS_TIMEOUT, default 300
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=4)  # a rank may wait a whole model load + batch for its peers


def _int(env, key):
    try:
        return int(env[key])
    except ValueError:
        raise UserError(f"environment variable {key}={env[key]!r} is not an integer") from None


def rendezvous_timeout():
    if RENDEZVOUS_TIMEOUT is not None:
        return RENDEZVOUS_TIMEOUT
    text = os.environ.get("DEEPCACHE_RENDEZVOUS_TIMEOUT", "300")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise UserError(f"DEEPCACHE_RENDEZVOUS_TIMEOUT={text!r} is not a number of seconds > 0")
    return value


def dist_env(env=None):
    """(rank, world size, local rank) from torchrun's or SLURM's variables; (0, 1, 0) otherwise."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env or "RANK" in env:
        missing = [k for k in ("RANK", "WORLD_SIZE") if k not in env]
        if missing:
            raise UserError(f"{' and '.join(missing)} is not set but {'RANK' if missing == ['WORLD_SIZE'] else 'WORLD_SIZE'}"
                            " is: launch with torchrun, or unset both")
        rank, world, local = _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env and _int(env, "SLURM_NTASKS") > 1:
        rank, world = _int(env, "SLURM_PROCID"), _int(env, "SLURM_NTASKS")
        local = _int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0
    else:
        return 0, 1, 0
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"inconsistent process layout: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


class Ranks:
    """The ranks of one run: `rank`, `world`, `local_rank`, and a few CPU collectives over gloo."""

    def __init__(self, rank=0, world=1, local_rank=0):
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.group = None

    @classmethod
    def from_env(cls, env=None):
        rendezvous_timeout()  # a malformed value is an error before any work
        return cls(*dist_env(env))

    def init(self):
        """Join the process group (a no-op for one process). ValueError if the peers do not show up
        within DEEPCACHE_RENDEZVOUS_TIMEOUT seconds, instead of a hang."""
        if self.world == 1:
            return self
        env = os.environ
        if "MASTER_ADDR" not in env:
            if "SLURM_JOB_NODELIST" not in env:
                raise UserError(f"WORLD_SIZE={self.world} but MASTER_ADDR is not set: launch with torchrun "
                                "(or srun), or unset WORLD_SIZE and RANK")
            nodes = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]],
                                   capture_output=True, text=True).stdout.split()
            if not nodes:
                raise UserError("cannot find the first node of the SLURM job (scontrol show hostnames failed)")
            env["MASTER_ADDR"] = nodes[0]
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0") or 0) % 1000))
        timeout = rendezvous_timeout()
        try:
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world,
                                    timeout=datetime.timedelta(seconds=timeout))
            self.group = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)
        except (RuntimeError, ValueError) as e:  # DistNetworkError / DistStoreError / timeouts
            raise UserError(f"rank {self.rank} of {self.world}: the process group did not form within "
                            f"{timeout:.0f} s at {env['MASTER_ADDR']}:{env['MASTER_PORT']} "
                            f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}): are all "
                            "ranks running? (DEEPCACHE_RENDEZVOUS_TIMEOUT sets the wait)") from None
        return self

    def max(self, value):
        """The maximum of an integer over all ranks (every rank must call it)."""
        return int(self._reduce(torch.tensor(value, dtype=torch.int64), dist.ReduceOp.MAX))

    def same(self, text):
        """Whether every rank passed the same `text` (every rank must call it)."""
        h = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
        return self.max(h) == -self.max(-h)

    def sum(self, value):
        return float(self._reduce(torch.tensor(value, dtype=torch.float64), dist.ReduceOp.SUM))

    def max_float(self, value):
        return float(self._reduce(torch.tensor(value, dtype=torch.float64), dist.ReduceOp.MAX))

    def _reduce(self, tensor, op):
        if self.group is not None:  # CPU tensor on a gloo group: what this backend accepts
            dist.all_reduce(tensor, op=op, group=self.group)
        return tensor

    def barrier(self):
        if self.group is not None:
            dist.barrier(group=self.group)

    def close(self):
        if self.group is not None:
            dist.destroy_process_group()
            self.group = None
