"""GPU packing: how many trials share one GPU, from one trial's measured peak memory.

A small CNN uses a few percent of a GPU, so a study with ``resources: {gpus: auto}`` runs
its first trial alone on a GPU, reads the memory it reserved at its peak, and gives each
later worker ``1 / n`` of a GPU, with ``n`` the number of such trials (plus each worker
process's own CUDA context) that fit in ``HEADROOM`` of the GPU's memory. A trial that runs
out of memory anyway is retried alone on a whole GPU after the others.
"""

from __future__ import annotations

HEADROOM = 0.85  # of the GPU's memory; the rest absorbs fragmentation and peaks we missed
CONTEXT_BYTES = 512 * 2**20  # a worker process's CUDA context, not seen by the allocator
MAX_PER_GPU = 32  # beyond this, the CPU side (one process per worker) is the bottleneck


def trials_per_gpu(peak_bytes: int, total_bytes: int, max_per_gpu: int = MAX_PER_GPU) -> int:
    """How many trials of ``peak_bytes`` each fit on a GPU of ``total_bytes`` (at least 1)."""
    if total_bytes <= 0:
        raise ValueError(f"GPU memory must be > 0 bytes, got {total_bytes}")
    per_trial = max(peak_bytes, 0) + CONTEXT_BYTES
    return max(1, min(max_per_gpu, int(HEADROOM * total_bytes // per_trial)))


def gpu_fraction(per_gpu: int) -> float:
    """The ``num_gpus`` of one worker when ``per_gpu`` workers share a GPU. Rounded down
    to 4 decimals (Ray's resolution) so that ``per_gpu`` of them always fit."""
    return int(10_000 / per_gpu) / 10_000
