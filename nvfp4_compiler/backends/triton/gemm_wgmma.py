"""W4A4 GEMM partial sums for memory-bound row counts (M <= 64) on Hopper, in Gluon (sm_90 only).
An experiment, not routed by ``gemm`` until the H100 says it pays (``gemm(..., wgmma=True)`` forces it).

Why: at M <= 64 the GEMM streams the weights, and ``gemm.py``'s split-K tile kernel reaches 0.50-1.13x
cuBLAS bf16 at M = 64 (RESULTS.md) against the 3x goal that the 3.56x fewer weight bytes allow.
Triton lowers each ``tl.dot`` of a tile decoded in registers as: store to shared memory, fence,
wgmma, wait; so nothing runs beside the tensor cores and each step's loads wait for the last step's
arithmetic (RESULTS.md, a3: every HGMMA followed by a wait and a barrier). The decode-attention
kernel that broke that chain in Gluon (``attention_wgmma``) measured 1.4-1.9x faster than its
Triton twin. This kernel does the same for the GEMM, and keeps more bytes in flight:

    step s:  copies of step s + RING - 1's A and W bytes issued (cp.async into a ring, no registers)
             wait until step s's bytes have landed; decode A(s), W(s) -> fp16 buffer s % 2
             (meanwhile the tensor cores run step s - 1's MMAs); wait for those
             acc += A(s) W(s)^T, even and odd K halves (async wgmma), left running

One warpgroup computes a [64, BLOCK_N] tile of A W^T (rows past M are zeros; with M <= 16 only
A's first 16 rows are copied and decoded each step, which cuts the loop by 29%) over a run of K
steps (split-K), and adds it by relaxed atomics into ``split_k``'s workspace, in the decoded
tiles' unit (2^-14, as ``gemm_kernel``); ``gemm.split_k_epilogue_kernel`` then finishes every tile
(alpha, bias, activation, gate/residual, amax or the next operand). The decode is
``attention_wgmma._decode_to_shared`` (``numerics.decode_nvfp4_tile``'s arithmetic, exact in fp16),
the sums are fp32 in another order than ``gemm_kernel``'s, so the outputs agree within fp32
accumulation order.

Not run by the CPU interpreter (Gluon has none): CPU tests compile it for sm_90; GPU tests compare
``gemm(..., wgmma=True)`` with the reference backend.
"""

from __future__ import annotations

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, warpgroup_mma,
                                                               warpgroup_mma_init, warpgroup_mma_wait)

from .attention_wgmma import _byte_layout, _decode_to_shared, _mma_layout, copy_rows_async, read_ring_slot

BLOCK_M = 64       # wgmma's M for one warpgroup; a call has at most this many rows
BLOCK_K = 128      # K elements per step: 64 bytes and 8 block scales per row
NUM_WARPS = 4      # one warpgroup
MAX_RING = 5
# Tuning knobs, read at each call (ab_gemm_wgmma.py sets them): output columns per program (64 or
# 128) and K steps of raw A and W bytes in shared memory, RING - 1 of them in flight.
BLOCK_N = 64
RING = 3
#: Shared memory an SM offers its programs (H100: 228 KB, 1 KB of it reserved per program).
SHARED_PER_SM = 228 * 1024


@gluon.jit
def _copy_step(rings, slot, a_ptr, as_ptr, w_ptr, ws_ptr, M, N, n0, step, last, ROW_BYTES, ROW_BLOCKS,
               A_ROWS: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, num_warps: gl.constexpr):
    """Issue K step ``step``'s copies of A's first A_ROWS rows and W's rows [n0, n0 + BLOCK_N) into
    ring slot ``slot`` as one commit group (all zeros from ``last`` on, so every step commits a group)."""
    a_ring, ab_ring, w_ring, wb_ring = rings
    live = step < last
    copy_rows_async(a_ring.index(slot), ab_ring.index(slot), a_ptr, as_ptr, 0, 1, gl.where(live, M, 0), step,
                    ROW_BYTES, ROW_BLOCKS, A_ROWS, BLOCK_K, num_warps)
    copy_rows_async(w_ring.index(slot), wb_ring.index(slot), w_ptr, ws_ptr, n0, 1, gl.where(live, N - n0, 0), step,
                    ROW_BYTES, ROW_BLOCKS, BLOCK_N, BLOCK_K, num_warps)
    async_copy.commit_group()


@gluon.jit
def _decode_slot(data_ring, bits_ring, slot, even_smem, odd_smem, L3: gl.constexpr):
    """A landed ring slot's rows decoded to fp16 (2^-7 x E2M1 x E4M3, exact) into the even and odd
    K halves' buffers, as wgmma operands."""
    packed, bits = read_ring_slot(data_ring, bits_ring, slot, L3)
    _decode_to_shared(packed, bits, even_smem, odd_smem, packed.shape[0], 16 * packed.shape[1])


@gluon.jit
def gemm_partials_wgmma_kernel(
    a_ptr, as_ptr, w_ptr, ws_ptr, sums_ptr, M, N, ROW_BYTES, ROW_BLOCKS, STEPS, STEPS_PER_SPLIT,
    A_ROWS: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, RING: gl.constexpr, num_warps: gl.constexpr,
):
    pid_n, pid_k = gl.program_id(0), gl.program_id(1)
    n0 = pid_n * BLOCK_N
    L3: gl.constexpr = _byte_layout(num_warps, BLOCK_K // 16)
    mma: gl.constexpr = _mma_layout(num_warps, BLOCK_N)
    a_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, BLOCK_K // 2], gl.float16)
    w_l: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, BLOCK_K // 2], gl.float16)
    raw: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])   # a slot's bytes row-major, no swizzle
    a_e = gl.allocate_shared_memory(gl.float16, [2, 64, BLOCK_K // 2], a_l)
    a_o = gl.allocate_shared_memory(gl.float16, [2, 64, BLOCK_K // 2], a_l)
    w_e = gl.allocate_shared_memory(gl.float16, [2, BLOCK_N, BLOCK_K // 2], w_l)
    w_o = gl.allocate_shared_memory(gl.float16, [2, BLOCK_N, BLOCK_K // 2], w_l)
    rings = (gl.allocate_shared_memory(gl.uint8, [RING, A_ROWS, BLOCK_K // 2], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, A_ROWS, BLOCK_K // 16], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, BLOCK_N, BLOCK_K // 2], raw),
             gl.allocate_shared_memory(gl.uint8, [RING, BLOCK_N, BLOCK_K // 16], raw))
    a_ring, ab_ring, w_ring, wb_ring = rings

    if A_ROWS < 64:   # rows past A_ROWS (past M) stay zero: only the first A_ROWS are decoded each step
        zeros = gl.zeros([64, BLOCK_K // 2], gl.float16, layout=gl.SliceLayout(1, L3))
        for half in gl.static_range(2):
            a_e.index(half).store(zeros)
            a_o.index(half).store(zeros)
    first = pid_k * STEPS_PER_SPLIT
    last = gl.minimum(first + STEPS_PER_SPLIT, STEPS)
    for r in gl.static_range(RING - 1):   # steps first .. first + RING - 2 in flight
        _copy_step(rings, r, a_ptr, as_ptr, w_ptr, ws_ptr, M, N, n0, first + r, last, ROW_BYTES, ROW_BLOCKS,
                   A_ROWS, BLOCK_N, BLOCK_K, num_warps)
    acc = warpgroup_mma_init(gl.full([64, BLOCK_N], 0.0, gl.float32, layout=mma))
    for step in range(first, last):
        j = step - first
        # step + RING - 1 goes into the slot step - 1 used (decoded a step ago)
        _copy_step(rings, (j + RING - 1) % RING, a_ptr, as_ptr, w_ptr, ws_ptr, M, N, n0, step + RING - 1, last,
                   ROW_BYTES, ROW_BLOCKS, A_ROWS, BLOCK_N, BLOCK_K, num_warps)
        async_copy.wait_group(RING - 1)      # step's group has landed
        # decode into the buffer whose MMAs (two steps ago) were waited for a step ago, while the
        # tensor cores run the previous step's
        buf = j % 2
        _decode_slot(a_ring, ab_ring, j % RING, a_e.index(buf).slice(0, A_ROWS), a_o.index(buf).slice(0, A_ROWS), L3)
        _decode_slot(w_ring, wb_ring, j % RING, w_e.index(buf), w_o.index(buf), L3)
        fence_async_shared()
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        acc = warpgroup_mma(a_e.index(buf), w_e.index(buf).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma(a_o.index(buf), w_o.index(buf).permute((1, 0)), acc, is_async=True)

    async_copy.wait_group(0)   # the copies past the split's end (zeros) before exit
    acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
    # atomics do not lower from the MMA layout (Triton 3.6): through a blocked one
    out_l: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [num_warps, 1], [1, 0])
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, out_l))
    cols = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_l))
    offs = gl.expand_dims(rows * N, 1) + gl.expand_dims(cols, 0)
    ok = gl.expand_dims(rows < M, 1) & gl.expand_dims(cols < N, 0)
    gl.atomic_add(sums_ptr + offs, gl.convert_layout(acc, out_l), mask=ok, sem="relaxed")


def supports(a2: torch.Tensor) -> bool:
    """Whether this kernel can take a GEMM with activations ``a2`` [M, Kp/2]: an sm_90 GPU, 1-64 rows,
    and Kp a multiple of 256. (cp.async copies need their global addresses aligned to their size:
    16 bytes of a row, 4 of its scales. Triton's launcher proves that only for row strides it
    specializes as multiples of 16: Kp/2 bytes and Kp/16 scales. Every Wan GEMM's K is.)"""
    return (a2.is_cuda and torch.cuda.get_device_capability(a2.device)[0] == 9
            and 1 <= a2.shape[0] <= BLOCK_M and a2.shape[1] % 128 == 0)


def shared_bytes(block_n: int, ring: int) -> int:
    """Shared memory of one program: double-buffered fp16 A and W (even and odd halves) and the ring
    of raw bytes and scale bits (matches the compiled kernel's, Triton 3.6)."""
    fp16_buffers = 2 * 2 * (BLOCK_M + block_n) * (BLOCK_K // 2) * 2
    return fp16_buffers + ring * (BLOCK_M + block_n) * (BLOCK_K // 2 + BLOCK_K // 16)


def resident_per_sm(block_n: int, ring: int) -> int:
    """Programs an SM holds at once, by shared memory (141-220 registers allow 2 and more): 2 at
    64 columns, 1 at 128."""
    return max(1, min(2, SHARED_PER_SM // (shared_bytes(block_n, ring) + 1024)))


def choose_split(n: int, kp: int, sms: int, block_n: int, ring: int) -> int:
    """K splits: the programs an SM holds, on each of ``sms`` SMs, over the column tiles; two K steps
    at least each."""
    tiles = triton.cdiv(n, block_n)
    return int(max(1, min(triton.cdiv(resident_per_sm(block_n, ring) * sms, tiles), triton.cdiv(kp, BLOCK_K) // 2)))


def launch_grid(n: int, kp: int, split_k: int, block_n: int) -> tuple[tuple[int, int], int]:
    """((column tiles, K splits), K steps per split) for ``split_k`` asked-for splits: the steps are
    cut into runs of equal length, so no split is empty (fewer splits than asked where they would be)."""
    steps = triton.cdiv(kp, BLOCK_K)
    per_split = triton.cdiv(steps, max(1, split_k))
    return (triton.cdiv(n, block_n), triton.cdiv(steps, per_split)), per_split


def gemm_partials_wgmma(a2, a_scale, w_data, w_scale, sums, split_k: int | None = None, ring: int | None = None,
                        block_n: int | None = None) -> None:
    """Add a2 x w^T (NVFP4 [M <= 64, Kp/2] and [N, Kp/2] bytes, uint8 E4M3 bits [., Kp/16]) into
    ``sums`` (fp32, the first M x N of ``split_k``'s zeroed workspace), in ``gemm_kernel``'s unit
    (2^-14 x the product); ``gemm.split_k_epilogue_kernel`` finishes it. ``split_k`` overrides
    ``choose_split``; ``ring`` (2 to MAX_RING) K steps of raw bytes in shared memory and ``block_n``
    (64 or 128) output columns per program default to the module's RING and BLOCK_N."""
    ring = RING if ring is None else ring
    block_n = BLOCK_N if block_n is None else block_n
    if not isinstance(ring, int) or not 2 <= ring <= MAX_RING:
        raise ValueError(f"ring: expected 2 to {MAX_RING} K steps, got {ring!r}")
    if block_n not in (64, 128):
        raise ValueError(f"block_n: expected 64 or 128 columns, got {block_n!r}")
    if not supports(a2):
        raise ValueError(f"a: expected 1 to {BLOCK_M} rows of K a multiple of 256 on an sm_90 GPU, got packed "
                         f"shape {tuple(a2.shape)} on {a2.device}")
    m, row_bytes = a2.shape
    n, kp = w_data.shape[0], 2 * row_bytes
    if split_k is None:
        split_k = choose_split(n, kp, torch.cuda.get_device_properties(a2.device).multi_processor_count, block_n, ring)
    grid, steps_per_split = launch_grid(n, kp, split_k, block_n)
    gemm_partials_wgmma_kernel[grid](
        a2, a_scale, w_data, w_scale, sums, m, n, row_bytes, kp // 16, triton.cdiv(kp, BLOCK_K), steps_per_split,
        A_ROWS=a_rows(m), BLOCK_N=block_n, BLOCK_K=BLOCK_K, RING=ring, num_warps=NUM_WARPS)


def a_rows(m: int) -> int:
    """A's rows a program copies and decodes each step: 16 for up to 16 rows (the other 48 of
    wgmma's 64 stay zero), else 64."""
    return 16 if m <= 16 else BLOCK_M
