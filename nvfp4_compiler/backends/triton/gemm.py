"""Triton W4A4 GEMM: NVFP4 operands decoded to exact fp16 tiles in registers, tensor-core dot
with fp32 accumulation, and the fused epilogue of backends/reference.py.

Operands (M rows of activations, N output features, Kp reduction length padded to 16):
    a_data  [M, Kp/2]   uint8     activations, E2M1 pairs        a_scale [M, Kp/16]  E4M3 bits
    w_data  [N, Kp/2]   uint8     weights, E2M1 pairs            w_scale [N, Kp/16]  E4M3 bits
    a_gs, w_gs  [1]     fp32      per-tensor decode scales (alpha = a_gs * w_gs)
    bias [N], gate / residual viewed as [B, T, N] (M = B*T, any strides, broadcast = stride 0)
    out  [M, N]  bf16/fp16/fp32,  amax [1] fp32 (max |out| after rounding)
    or, with a static next amax (QUANT_OUT), the rounded out quantized to NVFP4 along N instead:
    the next GEMM's operand (data [M, N/2], scale [M, N/16], S_dec [1]), bytes as quantize.py's
Why fp16 tiles: E2M1 x E4M3 products have at most 6 significant bits and lie in [2^-10, 2688];
scaled by 2^-7 they are exact in fp16, and the per-tensor scales (and the 2^14) are applied once,
in the epilogue.
Small M (memory-bound) splits K over more programs (SPLIT_K > 1). Their partial sums meet by
atomics in a persistent workspace (split_k.py), and no call needs a memset: up to ONE_LAUNCH_MAX_M
rows the last program of a tile runs the epilogue (one launch), above it split_k_epilogue_kernel
does; the last tile writes the amax. Large M (compute-bound, M >= DENSE_MIN_M) decodes each
operand once to exact fp16 and runs a dense fp16 GEMM, so the decode is not repeated for every
output tile (dense_gemm.py). M = 1 takes the GEMV (gemv.py). On Hopper, ``wgmma=True`` forces an
experimental Gluon kernel for M <= 64 (gemm_wgmma.py: decode beside asynchronous wgmma, operand
bytes through a cp.async ring), whose partial sums split_k_epilogue_kernel finishes; not routed
until the H100 has timed it.
"""

import functools
import os

import torch
import triton
import triton.language as tl

from .numerics import (DECODED_TILE_UNSCALE, block_scales, decode_nvfp4_tile, e2m1_encode, pack_codes_words,
                       store_packed_tile, tensor_scales, to_bf16_rne)
from .split_k import (add_partial_sums, persistent_workspace, reduce_tile_maxima, take_sums, tile_slots,
                      workspace_floats)

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
ACTIVATION_IDS = {"none": 0, "gelu": 1, "gelu_tanh": 2, "silu": 3, "relu": 4}
NUM_SMS_FALLBACK = 132
#: Decoded operand tiles carry 2^-7 each (decode_nvfp4_tile); the accumulator gets 2^14 back.
OPERAND_UNSCALE = tl.constexpr(DECODED_TILE_UNSCALE.value ** 2)


@triton.jit
def _decode_half_tiles(data_ptr, scale_ptr, rows, k0, n_rows, KP, BLOCK_K: tl.constexpr):
    """The even and odd K elements of a [len(rows), BLOCK_K] tile, as two fp16 [len(rows), BLOCK_K/2]
    tiles worth 2^-7 x E2M1 value x E4M3 block scale (``decode_nvfp4_tile``; zeros outside the
    matrix); the epilogue takes 2^14 back for the two operands (OPERAND_UNSCALE).

    Element 2i is the low nibble of byte i and 2i+1 the high one, so splitting the K sum into even
    and odd terms needs no interleaving: sum_k a_k w_k = sum_i a_2i w_2i + sum_i a_2i+1 w_2i+1.
    """
    byte_cols = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    row_ok = rows[:, None] < n_rows
    packed = tl.load(data_ptr + rows[:, None] * (KP // 2) + byte_cols[None, :],
                     mask=row_ok & (byte_cols[None, :] < KP // 2), other=0)
    scale_cols = k0 // 16 + tl.arange(0, BLOCK_K // 16)
    scale_bits = tl.load(scale_ptr + rows[:, None] * (KP // 16) + scale_cols[None, :],
                         mask=row_ok & (scale_cols[None, :] < KP // 16), other=0).to(tl.int32)
    return decode_nvfp4_tile(packed, scale_bits)


@triton.jit
def _tile_coords(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of output tile ``pid`` in grouped order: GROUP_M neighbouring row tiles are
    walked together, so programs running at once share A rows and W columns in L2."""
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    first_m = pid // (GROUP_M * num_n) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (pid % (GROUP_M * num_n)) % size_m, (pid % (GROUP_M * num_n)) // size_m


@triton.jit
def _activation(y, ACT: tl.constexpr):
    if ACT == 1:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 2:
        inner = 0.7978845608028654 * (y + 0.044715 * y * y * y)
        y = 0.5 * y * (1.0 + (2.0 * tl.sigmoid(2.0 * inner) - 1.0))  # tanh(u) = 2 sigmoid(2u) - 1
    elif ACT == 3:
        y = y * tl.sigmoid(y)
    elif ACT == 4:
        y = tl.maximum(y, 0.0)
    return y


@triton.jit
def _store_nvfp4(v, offs_m, offs_n, M, N, data_ptr, scale_ptr, amax_ptr, gs_ptr):
    """Quantize the output tile ``v`` (fp32, already rounded to the output dtype) to NVFP4 along N
    with the per-tensor amax at ``amax_ptr``, as quantize.py's kernel does (1x16 blocks, N a
    multiple of 16): E2M1 pairs into data_ptr (int32 words [M, N/8]), E4M3 bits into scale_ptr
    ([M, N/16] uint8); the tile holding element (0, 0) writes S_dec to gs_ptr."""
    BM: tl.constexpr = v.shape[0]
    BN: tl.constexpr = v.shape[1]
    s_enc, s_dec = tensor_scales(tl.load(amax_ptr))
    blocks = tl.reshape(v, (BM, BN // 16, 16))
    b_bits, encode = block_scales(tl.max(tl.abs(blocks), axis=2), s_enc, s_dec)
    words = pack_codes_words(tl.reshape(e2m1_encode(blocks * encode[:, :, None]), (BM, BN // 8, 8)))
    first_col = tl.min(offs_n, axis=0)
    store_packed_tile(data_ptr, scale_ptr, offs_m, M, first_col, N, words, b_bits)
    # A masked store, not an ``if``: an scf.if inside dense_tma_kernel's flattened persistent loop
    # fails Triton 3.6's pipeline ("region control flow edge ... needs 2").
    tl.store(gs_ptr, s_dec, mask=(tl.min(offs_m, axis=0) == 0) & (first_col == 0))


@triton.jit
def _epilogue(acc, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
              q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
              stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
              ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
              WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr, AMAX_READ_IN_KERNEL: tl.constexpr):
    """out = residual + gate * act(acc * alpha + bias), rounded once; amax of the rounded out.
    QUANT_OUT: the rounded out is not written but quantized to NVFP4 with the static amax at
    q_amax_ptr (``_store_nvfp4``): the next GEMM's operand, out_ptr only giving the dtype to round to.

    The amax's atomic max is relaxed: its readers are later kernels, and an acq_rel one costs a
    GPU-wide memory barrier (and an L1 invalidation) in every tile's epilogue. A kernel that reads
    the amax itself, after a ticket, passes AMAX_READ_IN_KERNEL (acq_rel)."""
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y = (acc * OPERAND_UNSCALE) * (tl.load(a_gs_ptr) * tl.load(w_gs_ptr))  # x 2^14 is exact: acc as the reference's
    if HAS_BIAS:
        y = y + tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y = _activation(y, ACT)
    b_idx, t_idx = offs_m // T, offs_m % T
    if HAS_GATE:
        gate = tl.load(gate_ptr + b_idx[:, None] * stride_gb + t_idx[:, None] * stride_gt + offs_n[None, :] * stride_gn,
                       mask=mask, other=0.0)
        y = y * gate.to(tl.float32)
    if HAS_RES:
        res = tl.load(res_ptr + b_idx[:, None] * stride_rb + t_idx[:, None] * stride_rt + offs_n[None, :] * stride_rn,
                      mask=mask, other=0.0)
        y = res.to(tl.float32) + y
    if out_ptr.dtype.element_ty == tl.bfloat16:
        out = to_bf16_rne(y)
    else:
        out = y.to(out_ptr.dtype.element_ty)
    if QUANT_OUT:
        _store_nvfp4(out.to(tl.float32), offs_m, offs_n, M, N, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr)
    else:
        tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], out, mask=mask)
        if WANT_AMAX:
            tile_max = tl.max(tl.max(tl.where(mask, tl.abs(out.to(tl.float32)), 0.0), axis=1), axis=0)
            if AMAX_READ_IN_KERNEL:
                tl.atomic_max(amax_ptr, tile_max, sem="acq_rel")
            else:
                tl.atomic_max(amax_ptr, tile_max, sem="relaxed")


@triton.jit
def finish_tile(acc, offs_m, offs_n, tile, tiles, tile_max_ptr, ticket_ptr, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr,
                gate_ptr, res_ptr, out_ptr, amax_ptr, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb,
                stride_gt, stride_gn, stride_rb, stride_rt, stride_rn, ACT: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr, WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr):
    """``_epilogue`` of output tile ``tile`` (of ``tiles``) whose sums ``acc`` are complete, its max
    |out| into its slot, and the last tile's reduction of the slots into the amax (split_k.py)."""
    _epilogue(acc, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr,
              tile_max_ptr + tile, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb, stride_gt, stride_gn,
              stride_rb, stride_rt, stride_rn, ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX, QUANT_OUT, True)
    if WANT_AMAX and not QUANT_OUT:
        reduce_tile_maxima(amax_ptr, tile_max_ptr, ticket_ptr + tiles, tiles)


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
    # Decoded [BLOCK_N, BLOCK_K] tiles live in registers: past ~64 x 128 per 4 warps the kernel
    # spilled (ncu, H100: 255 registers, 6.7k spill requests, 12.5% occupancy at 16x128x256).
    shapes = [(16, 32, 128, 4, 4), (16, 64, 64, 4, 4), (16, 64, 128, 4, 3), (16, 32, 64, 2, 4),
              (32, 64, 64, 4, 4), (32, 64, 128, 4, 3), (64, 64, 64, 4, 4), (64, 64, 128, 8, 3),
              (128, 128, 64, 8, 3)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
            for bm, bn, bk, w, st in shapes]


def _prune(configs, named_args, **kwargs):
    """Small M: only tiles with BLOCK_M close to M (bigger ones waste the whole MMA on padding)."""
    m = named_args["M"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, triton.next_power_of_2(m))]
    kept = [c for c in kept if c.kwargs["BLOCK_K"] <= max(64, named_args["KP"])]
    return kept or configs[:1]


#: (BLOCK_M, BLOCK_N) of every tile the autotuner may pick, built once (``max_tiles`` runs per call).
TILE_SHAPES = tuple({(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in _configs()})


def max_tiles(m: int, n: int) -> int:
    """Output tiles of the smallest tile the autotuner may pick (the workspace's tile slots)."""
    return max(triton.cdiv(m, bm) * triton.cdiv(n, bn) for bm, bn in TILE_SHAPES)


# reset_to_zero: without ONE_LAUNCH the autotuner's trial runs add partial sums to the workspace
# that no epilogue takes (it zeroes the workspace before each trial and after tuning).
@triton.autotune(configs=_configs(), key=["M", "N", "KP", "SPLIT_K"], prune_configs_by={"early_config_prune": _prune},
                 reset_to_zero=["work_ptr"])
@triton.jit
def gemm_kernel(
    a_ptr, as_ptr, w_ptr, ws_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, work_ptr,
    M, N, KP, T, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr, SPLIT_K: tl.constexpr, ONE_LAUNCH: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr = 8,
):
    tile, tiles = tl.program_id(0), tl.num_programs(0)
    pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(pid_k * BLOCK_K, KP, BLOCK_K * SPLIT_K):
        a_even, a_odd = _decode_half_tiles(a_ptr, as_ptr, offs_m, k0, M, KP, BLOCK_K)
        w_even, w_odd = _decode_half_tiles(w_ptr, ws_ptr, offs_n, k0, N, KP, BLOCK_K)
        acc = tl.dot(a_even, tl.trans(w_even), acc)
        acc = tl.dot(a_odd, tl.trans(w_odd), acc)

    # split_k.py: the tile's last split runs the epilogue, the last tile the amax; or, without
    # ONE_LAUNCH, split_k_epilogue_kernel takes the sums.
    sums_ptr, tile_max_ptr, ticket_ptr = tile_slots(work_ptr, M * N if SPLIT_K > 1 else 0, tiles)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    if SPLIT_K > 1 and not ONE_LAUNCH:
        tl.atomic_add(sums_ptr + offs_m[:, None] * N + offs_n[None, :], acc, mask=mask, sem="relaxed")
    else:
        last_of_tile = SPLIT_K == 1
        if SPLIT_K > 1:
            last_of_tile, acc = add_partial_sums(acc, sums_ptr, offs_m[:, None] * N + offs_n[None, :], mask,
                                                 ticket_ptr + tile, SPLIT_K)
        if last_of_tile:
            finish_tile(acc, offs_m, offs_n, tile, tiles, tile_max_ptr, ticket_ptr, M, N, T, a_gs_ptr, w_gs_ptr,
                        bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
                        stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn, ACT, HAS_BIAS, HAS_GATE,
                        HAS_RES, WANT_AMAX, QUANT_OUT)


@triton.jit
def split_k_epilogue_kernel(
    work_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
    M, N, T, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The epilogue of a split-K gemm_kernel run without ONE_LAUNCH: takes the partial sums from
    the workspace (zeroing them) and finishes each [BLOCK_M, BLOCK_N] tile, amax included."""
    tile, tiles = tl.program_id(0), tl.num_programs(0)
    offs_m = tile // tl.cdiv(N, BLOCK_N) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tile % tl.cdiv(N, BLOCK_N) * BLOCK_N + tl.arange(0, BLOCK_N)
    sums_ptr, tile_max_ptr, ticket_ptr = tile_slots(work_ptr, M * N, tiles)
    acc = take_sums(sums_ptr + offs_m[:, None] * N + offs_n[None, :], (offs_m[:, None] < M) & (offs_n[None, :] < N))
    finish_tile(acc, offs_m, offs_n, tile, tiles, tile_max_ptr, ticket_ptr, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr,
                gate_ptr, res_ptr, out_ptr, amax_ptr, q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb,
                stride_gt, stride_gn, stride_rb, stride_rt, stride_rn, ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX,
                QUANT_OUT)


#: Up to this many rows a split-K tile GEMM is one launch (its last split of a tile runs the
#: epilogue); more rows take a second kernel for the epilogue. H100, CUDA graphs, against the
#: four graph nodes before (two memsets, the GEMM, the epilogue): one launch was 1.00-1.27x as
#: fast at M = 16 but 0.82-0.99x at M = 64 (benchmarks/RESULTS.md, twentieth session).
ONE_LAUNCH_MAX_M = 16

#: From this many rows a GEMM is compute-bound on Hopper (DESIGN.md: M ~ 300 for bf16): decode
#: both operands once to fp16 and run a dense tensor-core GEMM instead of decoding per tile.
DENSE_MIN_M = 512


def strategy_for(m: int) -> str:
    """Which kernel a GEMM with ``m`` rows gets (the report shows it)."""
    from .gemv import GEMV_MAX_M
    if m <= GEMV_MAX_M:
        return "GEMV on CUDA cores: 16-element NVFP4 block dot products in integers (dp4a), split-K, fused epilogue"
    if m >= DENSE_MIN_M:
        return ("decoded operands: NVFP4 -> exact fp16 once per call, dense fp16 tensor-core GEMM "
                "(TMA loads, persistent grid, where the GPU has TMA), fused epilogue")
    return "in-register decode of NVFP4 tiles, fp16 tensor-core MMA, fused epilogue" + (
        ", split-K" if m <= 64 else "")


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return NUM_SMS_FALLBACK


def choose_split_k(m: int, n: int, kp: int, device: torch.device) -> int:
    """Split K when output tiles alone cannot fill the GPU (memory-bound small-M GEMMs).

    Aim for ~4 programs per SM so enough warps are in flight to hide memory latency, keeping at
    least 256 elements of K per split. Tiles are counted as the autotuner mostly picks them: M <= 64
    fits one row tile (M = 64 took 64 x 64 tiles, not the four 16-row ones the count assumed
    before), 64 columns each. H100 sweep (benchmarks/sweep_split_k.py, Wan-1.3B, M = 16 and 64): the
    best split or within 2% of it at the FFN GEMMs, where the old count lost 5-16%.
    """
    if INTERPRET or m > 64:
        return 1
    tiles = triton.cdiv(n, 64)
    split = max(1, min(4 * _num_sms(device) // max(tiles, 1), kp // 256))
    return int(split)


def _as_btn(t: torch.Tensor | None, out_shape: torch.Size, device) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """View a gate/residual broadcast to ``out_shape`` as [B, T, N] strides (stride 0 = broadcast)."""
    if t is None:
        return torch.empty(1, device=device), (0, 0, 0)
    lead, n = out_shape[:-1], out_shape[-1]
    t_idx = lead[-1] if len(lead) else 1
    b = int(torch.Size(lead).numel()) // max(t_idx, 1)
    expanded = t.expand(out_shape)
    try:
        view = expanded.view(b, t_idx, n)
    except RuntimeError:  # leading dims cannot merge without a copy
        view = expanded.reshape(b, t_idx, n)
    return view, tuple(view.stride())


def _nvfp4_sink(m: int, n: int, next_amax: torch.Tensor, out, device) -> tuple[torch.Tensor, ...]:
    """(data [m, n/2] uint8, scale [m, n/16] uint8, next_amax [1], S_dec [1]) for a QUANT_OUT
    epilogue; data and scale are ``out`` when given; S_dec is an ``aligned_scalar``."""
    if n % 16:
        raise ValueError(f"next_amax: quantizing the GEMM output needs N a multiple of 16, got N = {n}")
    if out is None:
        out = (torch.empty(m, n // 2, dtype=torch.uint8, device=device),
               torch.empty(m, n // 16, dtype=torch.uint8, device=device))
    data, scale = (t.view(torch.uint8).view(m, -1) for t in out)
    return data, scale, next_amax.reshape(1).to(torch.float32), aligned_scalar(device)


def aligned_scalar(device) -> torch.Tensor:
    """An fp32 [1] output on a 16-byte boundary (the first of four floats): Inductor asserts that
    of custom-op outputs."""
    return torch.empty(4, dtype=torch.float32, device=device)[:1]


def gemm(a_data, a_scale, a_gs, w_data, w_scale, w_gs, bias, activation, gate, residual, out_dtype,
         *, next_amax: torch.Tensor | None = None, split_k: int | None = None, dense: bool | None = None,
         vector: bool | None = None, wgmma: bool = False, out=None):
    """Same contract as ``backends.reference.gemm_op``: (out, amax). With a static ``next_amax``,
    ``reference.gemm_quantize_op``'s: the epilogue quantizes the rounded output to NVFP4 (the next
    GEMM's operand, 1x16 blocks along N) instead of writing it; (data, scale, S_dec) come back.

    ``split_k`` forces the in-register kernel with that split, ``dense`` forces (or forbids) the
    decoded-operand kernel, ``vector`` the GEMV kernel (M = 1; with ``split_k``, that split),
    ``wgmma`` the Gluon kernel for M <= 64 on sm_90 (``gemm_wgmma``, an experiment; with
    ``split_k``, that split), and ``out`` ([M, N] of ``out_dtype``; with ``next_amax``, (data, scale) of the returned shapes)
    receives the result (tests poison it first)."""
    lead = a_data.shape[:-1]
    kp = a_data.shape[-1] * 2
    n = w_data.shape[0]
    a2 = a_data.reshape(-1, kp // 2)
    m = a2.shape[0]
    device = a_data.device
    out_shape = torch.Size([*lead, n])
    if gate is not None or residual is not None:
        out_shape = torch.broadcast_shapes(out_shape, *(t.shape for t in (gate, residual) if t is not None))
        if out_shape[:-1].numel() != m:  # epilogue operands that enlarge the output: not a GEMM epilogue
            raise ValueError(f"gate/residual: broadcast shape {tuple(out_shape)} does not match {m} GEMM rows")
    if next_amax is None:
        out = torch.empty(m, n, dtype=out_dtype, device=device) if out is None else out
        q = None
    else:
        q = _nvfp4_sink(m, n, next_amax, out, device)
        out = torch.empty(1, dtype=out_dtype, device=device)  # only its dtype is read: the rounding before quantizing
    amax = _launch(a2, a_scale.view(torch.uint8).reshape(-1, kp // 16), a_gs.reshape(1), w_data,
                   w_scale.view(torch.uint8), w_gs.reshape(1), bias, activation, gate, residual, out_shape, out, q,
                   split_k=split_k, dense=dense, vector=vector, wgmma=wgmma) if m else torch.zeros(1, device=device)
    if next_amax is None:
        return out.view(out_shape), amax.view(())
    data, scale, _, s_dec = q
    if not m:
        s_dec.fill_(1.0)  # as quantize.py gives an empty tensor
    return (data.view(*out_shape[:-1], n // 2), scale.view(torch.float8_e4m3fn).view(*out_shape[:-1], n // 16),
            s_dec.view(()))


def _launch(a2, a_scale, a_gs, w_data, w_scale, w_gs, bias, activation, gate, residual, out_shape, out, q,
            *, split_k, dense, vector, wgmma=False) -> torch.Tensor:
    """Run the kernel ``gemm`` picks (GEMV, decoded-operand or in-register) on [M, Kp/2] operands
    and uint8 scales, with a QUANT_OUT epilogue into ``q`` (``_nvfp4_sink``) unless it is None;
    returns the output's amax [1] (undefined with QUANT_OUT)."""
    from .dense_gemm import dense_gemm  # dense_gemm.py and gemv.py build on this module's device functions
    from .gemv import GEMV_MAX_M, gemv
    (m, kp), n, device = (a2.shape[0], a2.shape[1] * 2), w_data.shape[0], a2.device
    gate_v, gs = _as_btn(gate, out_shape, device)
    res_v, rs = _as_btn(residual, out_shape, device)
    t_rows = out_shape[-2] if len(out_shape) > 1 else 1
    unused = a_gs  # what the kernels get for pointers they never read or write (no bias, no QUANT_OUT)
    bias_t = bias if bias is not None else unused
    flags = dict(ACT=ACTIVATION_IDS[activation], HAS_BIAS=bias is not None, HAS_GATE=gate is not None,
                 HAS_RES=residual is not None, WANT_AMAX=True, QUANT_OUT=q is not None)
    # The kernels store packed codes as int32 words.
    q = (q[0].view(torch.int32), *q[1:]) if q is not None else (unused,) * 4
    if vector if vector is not None else (m <= GEMV_MAX_M and split_k is None and not dense and not wgmma):
        return gemv(a2, a_scale, a_gs, w_data, w_scale, w_gs, bias_t, gate_v, gs, res_v, rs, t_rows, out, q, flags,
                    split_k=split_k)
    if dense if dense is not None else (m >= DENSE_MIN_M and split_k is None):
        # The atomic-max target of the epilogue; a quantizing epilogue has no amax (and skips the memset).
        amax = (torch.empty if flags["QUANT_OUT"] else torch.zeros)(1, dtype=torch.float32, device=device)
        dense_gemm(a2, a_scale, a_gs, w_data, w_scale, w_gs, bias_t, gate_v, gs, res_v, rs, t_rows, out, amax, q,
                   flags)
        return amax
    amax = aligned_scalar(device)  # written by the last tile (undefined with QUANT_OUT)
    if wgmma:  # partial sums from the Gluon kernel, then the epilogue kernel (gemm_wgmma.py)
        from .gemm_wgmma import gemm_partials_wgmma
        work = persistent_workspace(device, workspace_floats(m * n, max_tiles(m, n)))
        gemm_partials_wgmma(a2, a_scale, w_data, w_scale, work, split_k)
        separate_epilogue = True
    else:
        split_k = choose_split_k(m, n, kp, device) if split_k is None else split_k
        one_launch = m <= ONE_LAUNCH_MAX_M
        work = persistent_workspace(device, workspace_floats(m * n if split_k > 1 else 0, max_tiles(m, n)))

        def grid(meta):
            return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), split_k)

        gemm_kernel[grid](a2, a_scale, w_data, w_scale, a_gs, w_gs, bias_t, gate_v, res_v, out, amax, *q, work,
                          m, n, kp, t_rows, *gs, *rs, SPLIT_K=split_k, ONE_LAUNCH=one_launch, **flags)
        separate_epilogue = split_k > 1 and not one_launch
    if separate_epilogue:
        tiles = triton.cdiv(m, 16) * triton.cdiv(n, 128)  # within max_tiles(m, n): a config's tile is smaller
        split_k_epilogue_kernel[(tiles,)](work, a_gs, w_gs, bias_t, gate_v, res_v, out, amax, *q, m, n, t_rows, *gs,
                                          *rs, BLOCK_M=16, BLOCK_N=128, **flags)
    return amax
