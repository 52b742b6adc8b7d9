"""The numeric precision of CPU training: bf16 autocast where the CPU computes bf16 natively.

``conf/trainer/cpu.yaml`` sets ``precision: ${cpu_precision:}``, resolved by :func:`cpu_precision`.
On a CPU with bf16 dot-product instructions (x86 AVX512-BF16 or AMX, Arm BF16) bf16 autocast
trains the quickstart model faster than fp32; elsewhere oneDNN has no bf16 kernels and PyTorch
falls back to reference code that is much slower than fp32 (``benchmarks/mfu.py`` measures both), so
those CPUs train in fp32. The environment variable ``TMAPS_CPU_PRECISION`` (``32-true`` or
``bf16-mixed``) forces the choice, so that a test suite or a comparison can run either way on any CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

import torch

log = logging.getLogger(__name__)

FAST_CPU_PRECISION = "bf16-mixed"
FALLBACK_CPU_PRECISION = "32-true"
CPU_PRECISIONS = (FALLBACK_CPU_PRECISION, FAST_CPU_PRECISION)
PRECISION_VARIABLE = "TMAPS_CPU_PRECISION"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions: AVX512-BF16 or AMX on x86, BF16 on Arm."""
    if platform.machine().lower() in ("x86_64", "amd64", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.cache
def cpu_precision() -> str:
    """Lightning's ``precision`` for CPU training: ``"bf16-mixed"`` where bf16 is native, else ``"32-true"``.

    ``TMAPS_CPU_PRECISION`` (one of ``CPU_PRECISIONS``), when set, is the answer whatever the
    CPU; any other value is a ``ValueError`` naming the variable. The choice is logged once per
    process. Pass ``trainer.precision=32-true`` (or ``bf16-mixed``) to choose for one run; tests
    that compare outputs at tight tolerances pin ``32-true``.
    """
    forced = os.environ.get(PRECISION_VARIABLE, "")
    if forced:
        if forced not in CPU_PRECISIONS:
            raise ValueError(f"{PRECISION_VARIABLE}={forced!r} is not a CPU precision: set it to one of {', '.join(CPU_PRECISIONS)}, or unset it")
        log.info("trainer precision %s: forced by %s", forced, PRECISION_VARIABLE)
        return forced
    if cpu_has_native_bf16():
        log.info("trainer precision %s: this CPU computes bf16 natively", FAST_CPU_PRECISION)
        return FAST_CPU_PRECISION
    log.info(
        "trainer precision %s: this CPU (%s) has no native bf16 (AVX512-BF16, AMX or Arm BF16), where %s would be slower",
        FALLBACK_CPU_PRECISION,
        torch.backends.cpu.get_cpu_capability(),
        FAST_CPU_PRECISION,
    )
    return FALLBACK_CPU_PRECISION
