"""Model FLOPs utilisation (MFU) for the speed benchmarks, and their shared timing helpers.

MFU = the FLOPs a step must do / seconds / the device's peak. The FLOPs are counted the usual way
(Kaplan et al. 2020; the PaLM paper's MFU): ``2 * params`` per token through a forward,
``6 * params`` per token through a forward and backward, with ``params`` the model's distinct
parameters (tied embeddings counted once: the output projection's matmul is real work, the
embedding lookup is not, so the two roughly cancel). Attention's own FLOPs are left out (small at
these lengths). The peak is the dense bf16 tensor-core peak of the device's datasheet, looked up
by name in :data:`PEAK_BF16_TFLOPS`, or given with ``--peak-tflops``. On CPU MFU is "n/a".
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first name
# that occurs in torch.cuda.get_device_name() wins, so the more specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of ``fn()``, the device's queued work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def time_phases(phases: dict[str, Callable[[], object]], repeats: int, device: torch.device
                ) -> dict[str, list[float]]:
    """Seconds of every phase in each of ``repeats`` rounds, after one warm-up round (which
    also compiles). Phases run round-robin, so a slow spell of a shared machine hits them all."""
    times: dict[str, list[float]] = {k: [] for k in phases}
    for repeat in range(repeats + 1):
        for name, fn in phases.items():
            t = timed(fn, device)
            if repeat > 0:
                times[name].append(t)
    return times


def device_text(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H200)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({torch.get_num_threads()} threads)"


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters of ``model`` (tied weights once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def peak_tflops(device: torch.device, override: float | None = None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s: ``override`` if given, else from
    :data:`PEAK_BF16_TFLOPS` by device name; None on CPU or for a GPU not in the table."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def mfu_text(flops: float, seconds: float, peak: float | None) -> str:
    """MFU as a percentage string, or "n/a" without a peak."""
    if peak is None or seconds <= 0:
        return "n/a"
    return f"{100 * flops / seconds / (peak * 1e12):.2f}%"


def iteration_flops(params: int, rows: int, new_tokens: int, seq_len: int, update_passes: float,
                    extra_forwards: int = 1) -> float:
    """FLOPs of one training iteration on ``rows`` episodes.

    Args:
        params: the policy's parameters.
        rows, new_tokens: N episodes of G generated tokens (the rollout's decode steps).
        seq_len: columns of the teacher-forced forwards (prompt after trimming + G).
        update_passes: forward+backward passes over the whole batch (PPO: epochs).
        extra_forwards: teacher-forced forwards without backward (the reference's; 2 when the
            old log-probs are recomputed).
    """
    decode = 2 * params * rows * new_tokens
    forwards = extra_forwards * 2 * params * rows * seq_len
    updates = update_passes * 6 * params * rows * seq_len
    return decode + forwards + updates
