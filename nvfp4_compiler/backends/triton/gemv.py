"""Triton W4A4 GEMV: one activation row (decode-time serving shapes), on CUDA cores, in integers.

At M = 1 the tile kernel of gemm.py pads a 16-row tensor-core MMA with 15 zero rows, and Nsight
showed it latency-bound (DRAM at 11% of peak). Here each program reads a [BLOCK_N, BLOCK_K/16]
tile of weight blocks, one int64 per 16-element block, and takes each block's dot product with
the activation row's block exactly, in integers (``numerics.e2m1_block_dot``: a byte table in
registers and dp4a, about 3 SASS instructions per weight element where fp16 decode + fp32 FMAs
took 11; the activation's decode, repeated by every thread, doubles that). Each block sum (an
integer <= 2304) times the two E4M3 block scales is exact in fp32, so only the fp32 sum over
blocks is rounded, in another order than the reference's. On the H100 the same loads with no
arithmetic at all take 75-98% of this kernel's time (benchmarks/RESULTS.md): what is left is the
memory access and the split-K chain below, not the decode.

K is split over programs so that about GEMV_PROGRAMS_PER_SM programs per SM keep loads in flight;
the programs meet in one kernel, through split_k.py's persistent workspace and tickets.
"""

import torch
import triton
import triton.language as tl

from .gemm import INTERPRET, OPERAND_UNSCALE, _num_sms, aligned_scalar, finish_tile
from .numerics import e2m1_block_bytes, e2m1_block_dot, e4m3_decode_f16
from .split_k import add_partial_sums, persistent_workspace, tile_slots, workspace_floats

#: Rows up to which ``gemm`` takes this kernel (more rows go to the tensor-core tile kernel).
GEMV_MAX_M = 1
GEMV_PROGRAMS_PER_SM = 8
#: (BLOCK_N, BLOCK_K, warps): 4 KB of packed weights per program and step (H100 sweep:
#: benchmarks/sweep_gemv.py); the interpreter's small tile keeps CPU tests fast and still splits K.
TILE = (16, 32, 4) if INTERPRET else (32, 256, 4)
#: Block sums are of 2 x E2M1 values (x 4) and _epilogue multiplies by OPERAND_UNSCALE: undo both
#: (exact: a power of two on a sum that is far from fp32's range limits).
BLOCK_SUM_UNSCALE = tl.constexpr(0.25 / OPERAND_UNSCALE.value)


@triton.jit
def _step(a_ptr, as_ptr, w_ptr, ws_ptr, offs_n, kb0, N, KB, BLOCK_KB: tl.constexpr):
    """Exact fp32 block products of the weight tile at block offset kb0 and the activation row:
    [BLOCK_N, BLOCK_KB], each (block dot product of 2 x E2M1 values) x both block scales (zeros
    past N and K)."""
    kb = kb0 + tl.arange(0, BLOCK_KB)
    mask = (offs_n[:, None] < N) & (kb[None, :] < KB)
    w = tl.load(w_ptr + offs_n[:, None] * KB + kb[None, :], mask=mask, other=0)     # int64 blocks
    w_scale = tl.load(ws_ptr + offs_n[:, None] * KB + kb[None, :], mask=mask, other=0).to(tl.int32)
    a = tl.load(a_ptr + kb, mask=kb < KB, other=0)
    a_scale = tl.load(as_ptr + kb, mask=kb < KB, other=0).to(tl.int32)
    # The activation's blocks become byte words in the row's layout (each thread does the blocks
    # of its columns; with one weight row per thread that is as much work as the weight's decode).
    a0, a1, a2, a3 = e2m1_block_bytes(a)
    dots = e2m1_block_dot(w, tl.broadcast_to(a0[None, :], w.shape), tl.broadcast_to(a1[None, :], w.shape),
                          tl.broadcast_to(a2[None, :], w.shape), tl.broadcast_to(a3[None, :], w.shape))
    scales = e4m3_decode_f16(w_scale).to(tl.float32) * e4m3_decode_f16(a_scale).to(tl.float32)[None, :]
    return dots.to(tl.float32) * scales


@triton.jit
def gemv_kernel(
    a_ptr, as_ptr, w_ptr, ws_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
    work_ptr, M, N, KB, T, split_k, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    QUANT_OUT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KB: tl.constexpr,
):
    pid_n, pid_k = tl.program_id(0), tl.program_id(1)
    tiles = tl.num_programs(0)
    sums_ptr, tile_max_ptr, ticket_ptr = tile_slots(work_ptr, N, tiles)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    # K steps pid_k, pid_k + split_k, ... (of BLOCK_KB blocks each). The first is peeled so the
    # loop-carried accumulator takes the products' layout (from tl.zeros it may take another, and
    # every step would pay a conversion through shared memory). (Loading the next step's tile
    # before multiplying this one, to keep two steps in flight, measured no faster on the H100.)
    step = BLOCK_KB * split_k
    acc2 = _step(a_ptr, as_ptr, w_ptr, ws_ptr, offs_n, pid_k * BLOCK_KB, N, KB, BLOCK_KB)
    for kb0 in range(pid_k * BLOCK_KB + step, KB, step):
        acc2 += _step(a_ptr, as_ptr, w_ptr, ws_ptr, offs_n, kb0, N, KB, BLOCK_KB)
    offs_m = tl.arange(0, 1)
    acc = (tl.sum(acc2, axis=1) * BLOCK_SUM_UNSCALE)[None, :]                          # [1, BLOCK_N]
    offs = offs_m[:, None] * N + offs_n[None, :]
    mask = (offs_m[:, None] < 1) & (offs_n[None, :] < N)

    last_of_tile = split_k == 1
    if split_k > 1:
        last_of_tile, acc = add_partial_sums(acc, sums_ptr, offs, mask, ticket_ptr + pid_n, split_k)
    if last_of_tile:
        finish_tile(acc, offs_m, offs_n, pid_n, tiles, tile_max_ptr, ticket_ptr, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr,
                    gate_ptr, res_ptr, out_ptr, amax_ptr, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb,
                    stride_gt, stride_gn, stride_rb, stride_rt, stride_rn, ACT, HAS_BIAS, HAS_GATE, HAS_RES, True,
                    QUANT_OUT)


def _as_blocks(data: torch.Tensor) -> torch.Tensor:
    """Packed NVFP4 rows (uint8 [R, Kp/2]) as int64 [R, Kp/16], one 16-element block each (a copy
    only when the rows are not 8-byte aligned)."""
    data = data.contiguous()
    if data.data_ptr() % 8:
        data = data.clone()
    return data.view(torch.int64)


def choose_gemv_split(n: int, kp: int, device: torch.device) -> int:
    """Programs along K: ~GEMV_PROGRAMS_PER_SM per SM over all column tiles, at most one K step each."""
    block_n, block_k, _ = TILE
    tiles = triton.cdiv(n, block_n)
    return int(max(1, min(GEMV_PROGRAMS_PER_SM * _num_sms(device) // tiles, triton.cdiv(kp, block_k))))


def gemv(a2, a_scale, a_gs, w_data, w_scale, w_gs, bias_t, gate_v, gs, res_v, rs, t_rows, out, q, flags,
         split_k: int | None = None) -> torch.Tensor:
    """``out`` [1, N] = the fused epilogue of a2 (one row) x w^T; returns the amax [1].
    Arguments as ``gemm._launch`` prepares them for its kernels."""
    m, kp = a2.shape[0], a2.shape[1] * 2
    n = w_data.shape[0]
    if not 1 <= m <= GEMV_MAX_M:
        raise ValueError(f"a: expected at most {GEMV_MAX_M} row(s) for the GEMV kernel, got {m}")
    block_n, block_k, warps = TILE
    split_k = choose_gemv_split(n, kp, a2.device) if split_k is None else split_k
    tiles = triton.cdiv(n, block_n)
    amax = aligned_scalar(a2.device)
    gemv_kernel[(tiles, split_k)](
        _as_blocks(a2), a_scale, _as_blocks(w_data), w_scale, a_gs, w_gs, bias_t, gate_v, res_v, out, amax, *q,
        persistent_workspace(a2.device, workspace_floats(n, tiles)), m, n, kp // 16, t_rows, split_k, *gs, *rs,
        ACT=flags["ACT"], HAS_BIAS=flags["HAS_BIAS"], HAS_GATE=flags["HAS_GATE"], HAS_RES=flags["HAS_RES"],
        QUANT_OUT=flags["QUANT_OUT"],
        BLOCK_N=block_n, BLOCK_KB=block_k // 16, num_warps=warps)
    return amax
