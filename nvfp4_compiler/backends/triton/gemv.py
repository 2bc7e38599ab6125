"""Triton W4A4 GEMV: one activation row (decode-time serving shapes), on CUDA cores.

At M = 1 the tile kernel of gemm.py pads a 16-row tensor-core MMA with 15 zero rows, and Nsight
showed it latency-bound (DRAM at 11% of peak). Here each program decodes a [BLOCK_N, BLOCK_K]
weight tile (``decode_nvfp4_tile``: exact fp16, 2^-7 x E2M1 x E4M3) and multiplies it by the
decoded activation row in fp32. Every product of two such values has <= 12 significant bits, so it
is exact in fp32 and only the summation order differs from the reference. The accumulator is
elementwise ([BLOCK_N, BLOCK_K/2] fp32, the decoded tile's own layout) and reduced across threads
once, at the end. (A version for up to 4 rows, with a [rows, BLOCK_N, BLOCK_K/2] accumulator,
compiled to 206 registers and shared-memory layout conversions of every decoded tile.)

K is split over programs so that about GEMV_PROGRAMS_PER_SM programs per SM keep loads in flight.
Partial sums meet in an fp32 workspace by atomics; the last program of a column tile to arrive
(an atomic ticket) runs the fused epilogue. So a call is one memset (workspace, tickets, amax in one
buffer) and one kernel, where the tile kernel needs a second, epilogue kernel.
"""

import torch
import triton
import triton.language as tl

from .gemm import INTERPRET, _decode_half_tiles, _epilogue, _num_sms

#: Rows up to which ``gemm`` takes this kernel (more rows go to the tensor-core tile kernel).
GEMV_MAX_M = 1
GEMV_PROGRAMS_PER_SM = 8
#: (BLOCK_N, BLOCK_K, warps): 4 KB of packed weights per program and step, the fastest of five
#: tiles on all six Wan M = 1 GEMMs (H100, benchmarks/sweep_gemv.py); the interpreter's small tile
#: keeps CPU tests fast and still splits K.
TILE = (16, 32, 4) if INTERPRET else (32, 256, 4)


@triton.jit
def _step(a_ptr, as_ptr, w_ptr, ws_ptr, row0, offs_n, k0, N, KP, BLOCK_K: tl.constexpr):
    """Exact fp32 products of the weight tile at K offset k0 and the activation row: [BLOCK_N, BLOCK_K/2]
    (even and odd K elements summed)."""
    w_even, w_odd = _decode_half_tiles(w_ptr, ws_ptr, offs_n, k0, N, KP, BLOCK_K)
    # The activation row is read (from L1) and decoded once per weight row: its tile then has the
    # weight tile's layout. Decoded once as [1, BLOCK_K/2], the weight tile was converted to its
    # layout through shared memory instead, at every step.
    a_even, a_odd = _decode_half_tiles(a_ptr, as_ptr, row0, k0, 1, KP, BLOCK_K)
    return w_even.to(tl.float32) * a_even.to(tl.float32) + w_odd.to(tl.float32) * a_odd.to(tl.float32)


@triton.jit
def gemv_kernel(
    a_ptr, as_ptr, w_ptr, ws_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    acc_ptr, ticket_ptr, M, N, KP, T, split_k, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    WANT_AMAX: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row0 = tl.zeros((BLOCK_N,), dtype=tl.int32)                 # the one activation row, per weight row
    # The first step is peeled so the loop-carried accumulator takes the decoded tile's layout
    # (from tl.zeros it took another, and every step paid a conversion through shared memory).
    acc2 = _step(a_ptr, as_ptr, w_ptr, ws_ptr, row0, offs_n, pid_k * BLOCK_K, N, KP, BLOCK_K)
    for k0 in range((pid_k + split_k) * BLOCK_K, KP, BLOCK_K * split_k):
        acc2 += _step(a_ptr, as_ptr, w_ptr, ws_ptr, row0, offs_n, k0, N, KP, BLOCK_K)
    offs_m = tl.arange(0, 1)
    acc = tl.sum(acc2, axis=1)[None, :]                                                # [1, BLOCK_N]

    if split_k == 1:
        _epilogue(acc, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
                  stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
                  ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX)
    else:
        offs = offs_m[:, None] * N + offs_n[None, :]
        mask = (offs_m[:, None] < 1) & (offs_n[None, :] < N)
        tl.atomic_add(acc_ptr + offs, acc, mask=mask)
        # Every thread's partial sums are in before one thread takes the ticket; its acq_rel
        # atomic then publishes them to the program that takes the last ticket.
        tl.debug_barrier()
        if tl.atomic_add(ticket_ptr + pid_n, 1) == split_k - 1:
            total = tl.load(acc_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")  # from L2, past L1
            _epilogue(total, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr,
                      amax_ptr, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
                      ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX)


def choose_gemv_split(n: int, kp: int, device: torch.device) -> int:
    """Programs along K: ~GEMV_PROGRAMS_PER_SM per SM over all column tiles, at most one K step each."""
    block_n, block_k, _ = TILE
    tiles = triton.cdiv(n, block_n)
    return int(max(1, min(GEMV_PROGRAMS_PER_SM * _num_sms(device) // tiles, triton.cdiv(kp, block_k))))


def gemv(a2, a_scale, a_gs, w_data, w_scale, w_gs, bias_t, gate_v, gs, res_v, rs, t_rows, out, flags,
         split_k: int | None = None) -> torch.Tensor:
    """``out`` [1, N] = the fused epilogue of a2 (one row) x w^T; returns the amax [1].
    Arguments as ``gemm.gemm`` prepares them for its kernels."""
    m, kp = a2.shape[0], a2.shape[1] * 2
    n = w_data.shape[0]
    if not 1 <= m <= GEMV_MAX_M:
        raise ValueError(f"a: expected at most {GEMV_MAX_M} row(s) for the GEMV kernel, got {m}")
    block_n, block_k, warps = TILE
    split_k = choose_gemv_split(n, kp, a2.device) if split_k is None else split_k
    tiles = triton.cdiv(n, block_n)
    # One zeroed buffer, one memset: amax (padded to 16 bytes: callers such as Inductor expect
    # 16-byte aligned outputs), partial sums [M*N], tickets [tiles] (int32 zero = fp32 zero).
    work = torch.zeros(4 + m * n + tiles, dtype=torch.float32, device=a2.device)
    amax, acc, tickets = work[:1], work[4: 4 + m * n], work[4 + m * n:].view(torch.int32)
    gemv_kernel[(tiles, split_k)](
        a2, a_scale, w_data, w_scale, a_gs, w_gs, bias_t, gate_v, res_v, out, amax, acc, tickets,
        m, n, kp, t_rows, split_k, *gs, *rs, **flags,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
    return amax
