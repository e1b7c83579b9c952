"""Compile the Triton kernels of `kernels` for an NVIDIA GPU without one: Triton's
compiler (TTIR -> TTGIR -> LLVM IR -> PTX -> cubin) for a target such as sm_90, then ptxas' own
resource report (registers per thread, spill stores / loads, stack) on that PTX.

    kernel = compile_kernel("bwd", "bf16", K=128, V=128, C=64, BV=64, num_warps=8, num_stages=2)
    resources(kernel)   # {'registers': 255, 'spill_stores': ..., 'wgmma': ..., 'shared': ...}

Used by the sm_90 compile tests and by `experiments/bench/triton_regs.py`, which compares launch
configurations against `op.JAX_TRITON_LAUNCH`.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from linmix.ops.kernels.jax_triton import kernels as triton_kernels

# name -> (kernel, number of pointer arguments, pointers in the input dtype, extra constexprs)
KERNELS = {
    "fwd": (triton_kernels.gla_fwd_kernel, 10, ("q_ptr", "k_ptr", "v_ptr", "w_ptr"),
            dict(SCALE=0.125, STORE_STATES=True)),
    "bwd_dq": (triton_kernels.gla_bwd_dq_kernel, 9, ("q_ptr", "k_ptr", "v_ptr", "do_ptr", "w_ptr"),
               dict(BH=4)),
    "bwd": (triton_kernels.gla_bwd_kernel, 15, ("q_ptr", "k_ptr", "v_ptr", "do_ptr", "w_ptr"),
            dict(BH=4)),
    "pass_fwd": (triton_kernels.state_pass_fwd_kernel, 9, ("qd_ptr", "kd_ptr", "p_ptr", "v_ptr"),
                 dict(SCALE=0.125, STORE_STATES=True)),
    "pass_bwd": (triton_kernels.state_pass_bwd_kernel, 14,
                 ("qd_ptr", "kd_ptr", "p_ptr", "v_ptr", "do_ptr"), dict(BH=4)),
}  # fmt: skip
USES_W = ("fwd", "bwd_dq", "bwd")  # the kernels with the delta rule's optional w input


def compile_kernel(
    name: str,
    dtype: str,
    *,
    K: int,
    V: int,
    C: int,
    BV: int,
    num_warps: int,
    num_stages: int,
    has_w: bool = False,
    T: int = 256,
    capability: int = 90,
):
    """One kernel of `KERNELS` compiled for sm_<capability>; dtype 'bf16' / 'fp16' / 'fp32'."""
    kernel, pointers, wide, extra = KERNELS[name]
    precision = "ieee" if dtype == "fp32" else "tf32"
    constexprs = dict(T=T, N=T // C, K=K, V=V, C=C, BV=BV, PRECISION=precision, **extra)
    if name in USES_W:
        constexprs["HAS_W"] = has_w
    names = kernel.arg_names
    signature = {n: f"*{dtype}" if n in wide else "*fp32" for n in names[:pointers]}
    signature.update({n: "constexpr" for n in constexprs})
    values = {(names.index(n),): v for n, v in constexprs.items()}
    source = ASTSource(kernel, signature, constexprs=values)
    options = dict(num_warps=num_warps, num_stages=num_stages)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=options)


def _ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def resources(compiled, arch: str = "sm_90a") -> dict:
    """ptxas -v on the compiled kernel's PTX: registers per thread, spill bytes, stack bytes;
    Triton's shared memory per block; the products issued as Hopper wgmma and as mma.sync."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(compiled.asm["ptx"])
        cmd = [_ptxas(), f"-arch={arch}", "-v", path, "-o", os.path.join(tmp, "kernel.cubin")]
        report = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr

    def number(pattern: str) -> int:
        match = re.search(pattern, report)
        return int(match.group(1)) if match else 0

    return dict(
        registers=number(r"Used (\d+) registers"),
        spill_stores=number(r"(\d+) bytes spill stores"),
        spill_loads=number(r"(\d+) bytes spill loads"),
        stack=number(r"(\d+) bytes stack frame"),
        shared=compiled.metadata.shared,
        wgmma=compiled.asm["ptx"].count("wgmma.mma_async."),
        mma_sync=compiled.asm["ptx"].count("mma.sync."),
    )
