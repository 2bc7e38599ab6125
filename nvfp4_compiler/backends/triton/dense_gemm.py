"""The full-chunk W4A4 GEMM (M >= gemm.DENSE_MIN_M, compute-bound): both NVFP4 operands decoded
once to exact fp16 (2^-7 x E2M1 x E4M3, see gemm.py), then a dense fp16 tensor-core GEMM with
fp32 accumulation and gemm's fused epilogue.

On Hopper and later the GEMM reads its operands through TMA descriptors and runs a persistent
grid (one program per SM walking the output tiles). Measured on an H100 (benchmarks/RESULTS.md,
ninth session) it was 1.18-1.29x faster than the pointer-load kernel below at every Wan
full-chunk GEMM. The likely reasons (not profiled): TMA takes the address arithmetic and copy
issue off the warps, and a persistent program overlaps one tile's epilogue with the next tile's
first loads instead of paying a CTA launch and a pipeline fill per tile (persistence alone was
worth 0-6%). Older GPUs (no TMA) keep the pointer-load kernel.
"""

import functools

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .gemm import INTERPRET, _decode_half_tiles, _epilogue, _num_sms, _tile_coords

#: (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) of the TMA kernel: the best of six tiles, or within
#: 2% of it, at all six Wan full-chunk GEMMs in two runs of benchmarks/sweep_dense_gemm.py; 176 KB of
#: shared memory with a 16-bit output. An fp32 output tile needs twice the shared memory to
#: leave the MMA layout (128 KB for 128 x 256; 272 KB in all does not fit the H100's 227 KB), so
#: fp32 outputs take 128 x 128 tiles. The interpreter gets a small tile (CPU tests).
TMA_TILE = (16, 32, 32, 4, 1) if INTERPRET else (128, 256, 64, 8, 3)
TMA_TILE_FP32_OUT = (16, 32, 32, 4, 1) if INTERPRET else (128, 128, 64, 8, 4)


@triton.jit
def _decode_rows(data_ptr, scale_ptr, out_ptr, row0, R, KP, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows row0.. of one operand, this program's K slice, decoded to fp16 with K permuted."""
    rows = row0 + tl.arange(0, BLOCK_R)
    k0 = tl.program_id(1) * BLOCK_K
    even, odd = _decode_half_tiles(data_ptr, scale_ptr, rows, k0, R, KP, BLOCK_K)
    cols = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    mask = (rows[:, None] < R) & (cols[None, :] < KP // 2)
    base = out_ptr + rows[:, None] * KP + cols[None, :]
    tl.store(base, even, mask=mask)
    tl.store(base + KP // 2, odd, mask=mask)


@triton.jit
def decode_kernel(a_data_ptr, a_scale_ptr, a_out_ptr, RA, w_data_ptr, w_scale_ptr, w_out_ptr, RW, KP,
                  BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr):
    """NVFP4 rows -> exact fp16 values (2^-7 x E2M1 x E4M3, no per-tensor scale), K permuted: the even
    elements of a row first, then the odd ones (the same permutation on both GEMM operands leaves
    the product unchanged and spares an interleave). Both GEMM operands (same K) in one launch:
    the first row tiles are A's, the rest W's (RW = 0: A only). One launch instead of two spares
    a kernel boundary, and W's tiles fill the last wave of A's."""
    pid = tl.program_id(0)
    a_tiles = tl.cdiv(RA, BLOCK_R)
    if pid < a_tiles:
        _decode_rows(a_data_ptr, a_scale_ptr, a_out_ptr, pid * BLOCK_R, RA, KP, BLOCK_R, BLOCK_K)
    else:
        _decode_rows(w_data_ptr, w_scale_ptr, w_out_ptr, (pid - a_tiles) * BLOCK_R, RW, KP, BLOCK_R, BLOCK_K)


#: (rows, K elements, warps) of one decode_kernel program: long rows per program measured 2-11%
#: faster than (32, 128, 4) at every Wan full-chunk activation (ninth session's sweep; e.g. the
#: Wan-5B FFN-down input, 7040 x 14336, 105.6 -> 96.3 us, 2.6 TB/s read + written).
DECODE_TILE = (16, 512, 4)


def decode_to_f16(data: torch.Tensor, scale: torch.Tensor, tile=None, w_data: torch.Tensor | None = None,
                  w_scale: torch.Tensor | None = None):
    """[R, Kp/2] packed + [R, Kp/16] scales -> [R, Kp] fp16 (K permuted evens-then-odds); with
    ``w_data``/``w_scale`` (same Kp) both operands in one launch, returning (a16, w16). ``tile``
    overrides DECODE_TILE (the sweep times others)."""
    block_r, block_k, warps = tile or DECODE_TILE
    rows, kp = data.shape[0], data.shape[1] * 2
    out = torch.empty(rows, kp, dtype=torch.float16, device=data.device)
    pair = w_data is not None
    if pair:
        if w_data.shape[1] * 2 != kp:
            raise ValueError(f"w_data: expected {kp // 2} bytes per row (the activation's K), got {w_data.shape[1]}")
        w_rows = w_data.shape[0]
        w_out = torch.empty(w_rows, kp, dtype=torch.float16, device=data.device)
    else:  # A alone: the kernel's W side gets no rows (its pointers are never read)
        w_data, w_scale, w_out, w_rows = data, scale, out, 0
    block_k = min(block_k, 16 * triton.next_power_of_2(kp // 16))
    grid = (triton.cdiv(rows, block_r) + triton.cdiv(w_rows, block_r), triton.cdiv(kp, block_k))
    decode_kernel[grid](data, scale.view(torch.uint8), out, rows, w_data, w_scale.view(torch.uint8), w_out, w_rows,
                        kp, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=warps)
    return (out, w_out) if pair else out


@triton.jit
def dense_tma_kernel(
    a_desc, w_desc, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
    M, N, KP, T, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr = 8,
):
    """fp16 [M, KP] x fp16 [N, KP]^T through TMA descriptors ([BLOCK_M, BLOCK_K] and
    [BLOCK_N, BLOCK_K] boxes; rows and columns past the matrix read as zeros). Every program
    strides over the output tiles in gemm's grouped order."""
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=True):
        pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, KP, BLOCK_K):
            a = a_desc.load([pid_m * BLOCK_M, k0])
            w = w_desc.load([pid_n * BLOCK_N, k0])
            acc = tl.dot(a, w.T, acc)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        _epilogue(acc, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
                  q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt,
                  stride_rn, ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX, QUANT_OUT, False)


def _pointer_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=st)
            for bm, bn, bk, w, st in [(128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4),
                                      (128, 128, 64, 4, 4), (128, 256, 64, 8, 4), (64, 256, 64, 4, 4)]]


@triton.autotune(configs=_pointer_configs(), key=["M", "N", "KP"])
@triton.jit
def dense_pointer_kernel(
    a_ptr, w_ptr, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
    q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr,
    M, N, KP, T, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt, stride_rn,
    ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr, HAS_RES: tl.constexpr,
    WANT_AMAX: tl.constexpr, QUANT_OUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr = 8,
):
    """The same GEMM with masked pointer loads, one program per output tile (GPUs without TMA)."""
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m[:, None] * KP + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[:, None] * KP + offs_k[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KP, BLOCK_K):
        k_ok = (k0 + offs_k)[None, :] < KP
        a = tl.load(a_ptrs, mask=(offs_m[:, None] < M) & k_ok, other=0.0)
        w = tl.load(w_ptrs, mask=(offs_n[:, None] < N) & k_ok, other=0.0)
        acc = tl.dot(a, tl.trans(w), acc)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    _epilogue(acc, offs_m, offs_n, M, N, T, a_gs_ptr, w_gs_ptr, bias_ptr, gate_ptr, res_ptr, out_ptr, amax_ptr,
              q_data_ptr, q_scale_ptr, q_amax_ptr, q_gs_ptr, stride_gb, stride_gt, stride_gn, stride_rb, stride_rt,
              stride_rn, ACT, HAS_BIAS, HAS_GATE, HAS_RES, WANT_AMAX, QUANT_OUT, False)


@functools.lru_cache(maxsize=None)
def has_tma(device: torch.device) -> bool:
    """TMA descriptors: Hopper (sm_90) and later; the interpreter runs them too."""
    return INTERPRET or (device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9)


#: Work per second of each (BLOCK_M, BLOCK_N, warps, stages) the TMA kernel may take, relative to
#: TMA_TILE's, from H100 sweeps (benchmarks/sweep_tma_tiles.py, RESULTS.md fourteenth session): at
#: the Wan full-chunk shapes 128 x 128 with 8 warps ran at 0.66-0.82x of 128 x 256's speed; GEMMs
#: short of one wave measured 128 x 128 with 4 warps at 0.81-0.89x, and 64 x 128 with 4 warps at
#: 0.5-0.6x. The interpreter's tiles are for the CPU tests.
TILE_SPEED = ({(16, 32, 4, 1): 1.0, (16, 16, 4, 1): 0.7} if INTERPRET else
              {(128, 256, 8, 3): 1.0, (128, 128, 8, 4): 0.7, (128, 128, 4, 4): 0.8, (64, 128, 4, 4): 0.55})


@functools.lru_cache(maxsize=None)
def choose_tile(m: int, n: int, tile: tuple[int, ...], programs: int) -> tuple[int, ...]:
    """``tile`` (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), or a smaller TILE_SPEED tile where that
    finishes sooner. The programs walk the tiles in rounds, so a call costs its rounds times a
    tile's work over its speed: a GEMM with whole rounds of ``tile`` keeps it (a smaller tile only
    runs slower), one with fewer tiles than programs takes a smaller tile if that fills more SMs
    and the model says it saves at least 15% (Wan-5B's text K/V, 512 x 3072 x 3072: 48 tiles of
    128 x 256 for 132 SMs, 96 of 128 x 128, 1.8x faster on the H100)."""
    bm, bn, bk, warps, stages = tile

    def cost(t):
        rounds = triton.cdiv(triton.cdiv(m, t[0]) * triton.cdiv(n, t[1]), programs)
        return rounds * t[0] * t[1] / TILE_SPEED.get(t, 1.0)

    main = (bm, bn, warps, stages)
    best = min([t for t in TILE_SPEED if t[0] * t[1] < bm * bn] or [main], key=cost)
    if cost(best) > 0.85 * cost(main):  # the speeds are estimates: a smaller tile must win clearly
        best = main
    return best[0], best[1], bk, best[2], best[3]


def dense_tma_gemm(a16, w16, a_gs, w_gs, bias, gate, gs, res, rs, t_rows, out, amax, q, flags, tile=None,
                   programs_per_sm: int = 1, max_registers: int | None = None):
    """dense_tma_kernel on decoded operands, one program per SM; ``tile`` = (BLOCK_M, BLOCK_N,
    BLOCK_K, warps, stages), TMA_TILE(_FP32_OUT) unless given (``choose_tile`` then takes a smaller
    one for GEMMs with fewer tiles than SMs); ``programs_per_sm`` and ``max_registers`` (per
    thread) are for the sweeps."""
    # The tile follows the dtype the epilogue rounds to, with a quantizing epilogue too (QUANT_OUT):
    # 128 x 256 then needs 152 KB of shared memory (272 KB for fp32), and at the Wan FFN-up shapes
    # measured 1% slower (Wan-1.3B) to 6% faster (Wan-5B) than 128 x 128 (RESULTS.md, tenth session).
    m, n = a16.shape[0], w16.shape[0]
    slots = programs_per_sm * _num_sms(a16.device)
    bm, bn, bk, warps, stages = tile or choose_tile(
        m, n, TMA_TILE_FP32_OUT if out.dtype == torch.float32 else TMA_TILE, slots)
    programs = min(triton.cdiv(m, bm) * triton.cdiv(n, bn), slots)
    dense_tma_kernel[(programs,)](
        TensorDescriptor.from_tensor(a16, [bm, bk]), TensorDescriptor.from_tensor(w16, [bn, bk]),
        a_gs, w_gs, bias, gate, res, out, amax, *q, m, n, a16.shape[1], t_rows, *gs, *rs,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages,
        **({"maxnreg": max_registers} if max_registers else {}), **flags)


def dense_pointer_gemm(a16, w16, a_gs, w_gs, bias, gate, gs, res, rs, t_rows, out, amax, q, flags):
    """dense_pointer_kernel on decoded operands (autotuned per shape)."""
    m, n = a16.shape[0], w16.shape[0]
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    dense_pointer_kernel[grid](a16, w16, a_gs, w_gs, bias, gate, res, out, amax, *q, m, n, a16.shape[1], t_rows,
                               *gs, *rs, **flags)


def dense_gemm(a_data, a_scale, a_gs, w_data, w_scale, w_gs, bias, gate, gs, res, rs, t_rows, out, amax, q, flags):
    """``out`` (and the atomic max into ``amax``): decode both operands to fp16, then the TMA
    kernel where the GPU has TMA, else the pointer-load kernel. Arguments as gemm._launch prepares them: a_data
    [M, Kp/2], a_scale [M, Kp/16], gate/res as [B, T, N] views with their strides gs/rs, out [M, N], q the
    QUANT_OUT epilogue's pointers."""
    a16, w16 = decode_to_f16(a_data, a_scale, w_data=w_data, w_scale=w_scale)
    launch = dense_tma_gemm if has_tma(a16.device) else dense_pointer_gemm
    launch(a16, w16, a_gs, w_gs, bias, gate, gs, res, rs, t_rows, out, amax, q, flags)

