"""Triton NVFP4 quantization: one read of the input when the amax is known, two when not.

Operands (R rows = all leading dims, K the last dim, Kp = K rounded up to 16):
    x       [R, K]      fp32 / bf16 / fp16, any strides: row-major, or a transposed view (the
                        wgrad operands quantize x^T along tokens without a transposed copy)
    amax    [1]         fp32: given (static or from the producing GEMM) or reduced by `amax_kernel`
    data    [R, Kp/2]   uint8   two E2M1 codes per byte, element 2i in the low nibble (the kernel
                                writes it as int32 words [R, Kp/8], eight codes per word)
    scale   [R, Kp/16]  uint8   E4M3 bit patterns (viewed as float8_e4m3fn by the caller)
    s_dec   [1]         fp32    per-tensor decode scale
Blocks are 1x16 (TILE_ROWS=1) or 16x16 (TILE_ROWS=16: every row stores its tile's scale).
RHT=True applies the recipe's Hadamard transform per 16 along K before everything else (the amax
is then the transformed tensor's); STOCHASTIC=True rounds with the reference's counter-hash draws;
FOUR_OVER_SIX=True chooses each block's scale by Four Over Six (``four_over_six.py``). That variant
is for row-major inputs: on a transposed view with RHT it measured 34x slower than the spec's kernel
on the H100 (7.1 ms vs 0.21 ms at 2048 x 4096), which is why training applies it to the fprop
operands only.
"""

import os

import torch
import triton
import triton.language as tl

from .four_over_six import encode_four_over_six
from .numerics import (block_scales, e2m1_encode, e2m1_encode_stochastic, pack_codes_words, rht16, rounding_uniform,
                       store_packed_tile, tensor_scales, to_f32)


@triton.jit
def amax_kernel(x_ptr, amax_ptr, R, K, stride_r, stride_k, RHT: tl.constexpr, BLOCK_R: tl.constexpr,
                BLOCK_K: tl.constexpr):
    """amax_ptr[0] = max(amax_ptr[0], max |x|) over this program's tile (amax_ptr starts at 0);
    with RHT, of the transformed x."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < R) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_k, mask=mask, other=0.0).to(tl.float32)
    if RHT:
        x = tl.reshape(rht16(tl.reshape(x, (BLOCK_R, BLOCK_K // 16, 16)), BLOCK_R, BLOCK_K // 16), (BLOCK_R, BLOCK_K))
    tl.atomic_max(amax_ptr, tl.max(tl.max(tl.abs(x), axis=1), axis=0), sem="relaxed")  # read by a later kernel


#: (BLOCK_R, BLOCK_K, warps) the autotuner tries on a GPU.
GPU_TILES = [(16, 128, 4), (32, 128, 4), (32, 256, 8), (64, 128, 8), (16, 256, 4), (64, 256, 8), (32, 512, 8),
             (16, 512, 8), (32, 256, 4), (8, 1024, 8), (4, 2048, 8), (16, 1024, 8)]
#: The Four Over Six kernel takes one tile, untuned: it compiles ~5x slower than the spec's kernel
#: (two candidates, pairwise sums; 2-6 s per tile for sm_90), which across a training run's operand
#: shapes made twelve tuned tiles cost minutes of compilation.
FOUR_OVER_SIX_TILES = [(32, 128, 4)]


def _configs():
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [triton.Config({"BLOCK_R": 16, "BLOCK_K": 64}, num_warps=4)]
    return [triton.Config({"BLOCK_R": r, "BLOCK_K": k}, num_warps=w) for r, k, w in GPU_TILES]


def _prune(configs, named_args, **kwargs):
    """Tiles no wider than K, and whole 16x16 scale tiles (BLOCK_R a multiple of TILE_ROWS); with
    Four Over Six, only FOUR_OVER_SIX_TILES."""
    kp = (named_args["K"] + 15) // 16 * 16
    tile_rows = kwargs.get("TILE_ROWS", 1)
    kept = [c for c in configs if c.kwargs["BLOCK_K"] <= max(16, kp) and c.kwargs["BLOCK_R"] % tile_rows == 0]
    if kwargs.get("FOUR_OVER_SIX") and os.environ.get("TRITON_INTERPRET") != "1":
        kept = [c for c in kept if (c.kwargs["BLOCK_R"], c.kwargs["BLOCK_K"], c.num_warps) in FOUR_OVER_SIX_TILES]
    return kept or [triton.Config({"BLOCK_R": 16, "BLOCK_K": 16 * triton.next_power_of_2(kp // 16)}, num_warps=4)]


@triton.autotune(configs=_configs(), key=["R", "K", "stride_k", "TILE_ROWS", "RHT", "STOCHASTIC", "FOUR_OVER_SIX"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit(do_not_specialize=["seed_lo", "seed_hi"])  # seeds 0 and 1 would otherwise become constants
def quantize_kernel(
    x_ptr, amax_ptr, data_ptr, scale_ptr, s_dec_ptr, R, K, stride_r, stride_k, seed_lo, seed_hi, seed_ptr,
    TILE_ROWS: tl.constexpr, RHT: tl.constexpr, STOCHASTIC: tl.constexpr, SEED_IN_MEMORY: tl.constexpr,
    FOUR_OVER_SIX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_r, pid_k = tl.program_id(0), tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    # Padding columns (K..Kp) load as zeros, as the spec pads. A stride equal to 1 is specialized
    # by Triton, so either layout loads coalesced along it (16 bytes per thread for bf16: a
    # 16-block spans two threads, whose block amax is one shuffle).
    x = tl.load(x_ptr + rows[:, None] * stride_r + cols[None, :] * stride_k,
                mask=(rows[:, None] < R) & (cols[None, :] < K), other=0.0,
                eviction_policy="evict_first")  # streamed: each element is read once
    x = to_f32(x)

    s_enc, s_dec = tensor_scales(tl.load(amax_ptr))
    NB: tl.constexpr = BLOCK_K // 16
    blocks = tl.reshape(x, (BLOCK_R, NB, 16))
    if RHT:
        blocks = rht16(blocks, BLOCK_R, NB)
    block_amax = tl.max(tl.abs(blocks), axis=2)                       # [BLOCK_R, NB]
    if TILE_ROWS == 16:
        tiles = tl.max(tl.reshape(block_amax, (BLOCK_R // 16, 16, NB)), axis=1)
        block_amax = tl.reshape(tl.broadcast_to(tiles[:, None, :], (BLOCK_R // 16, 16, NB)), (BLOCK_R, NB))
    kp = (K + 15) // 16 * 16
    if FOUR_OVER_SIX:  # each block's scale: max -> 6 or max -> 4, the better reconstruction
        codes, b_bits = encode_four_over_six(blocks, block_amax, s_enc, s_dec, BLOCK_R, NB, TILE_ROWS)
    else:
        b_bits, e = block_scales(block_amax, s_enc, s_dec)
        scaled = blocks * e[:, :, None]
        if STOCHASTIC:
            # The draw of element (row, col) of the padded tensor: index row * Kp + col, mod 2^32.
            index = tl.reshape((rows[:, None].to(tl.int64) * kp + cols[None, :]).to(tl.uint32), (BLOCK_R, NB, 16))
            if SEED_IN_MEMORY:  # drawn on the GPU (CUDA-graph safe): int64 at seed_ptr
                seed = tl.load(seed_ptr)
                lo, hi = (seed & 0xFFFFFFFF).to(tl.uint32), (seed >> 32).to(tl.uint32)
            else:
                lo, hi = seed_lo.to(tl.uint32), seed_hi.to(tl.uint32)
            codes = e2m1_encode_stochastic(tl.minimum(tl.maximum(scaled, -6.0), 6.0), rounding_uniform(index, lo, hi))
        else:
            codes = e2m1_encode(scaled)  # saturates at +-6 itself

    # Eight codes per int32 word: each thread writes its 8 neighbouring codes in one 4-byte store.
    words = pack_codes_words(tl.reshape(codes, (BLOCK_R, BLOCK_K // 8, 8)))
    store_packed_tile(data_ptr, scale_ptr, rows, R, pid_k * BLOCK_K, kp, words, b_bits)
    if (pid_r == 0) & (pid_k == 0):
        tl.store(s_dec_ptr, s_dec)


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """x as [R, K] without a copy when it is row-major or a transposed 2-D view."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if 1 in x2.stride() else x2.contiguous()


def tensor_amax(x: torch.Tensor, rht: bool = False) -> torch.Tensor:
    """max |x| (of the RHT-transformed x with ``rht``) as a fp32 [1] tensor, one read of ``x``."""
    x2 = _as_rows(x)
    amax = torch.zeros(1, dtype=torch.float32, device=x.device)
    rows, k = x2.shape
    block_r = 16 if rht else 64  # the butterfly's shuffles hold more live registers
    grid = (triton.cdiv(rows, block_r), triton.cdiv(k, 256))
    amax_kernel[grid](x2, amax, rows, k, *x2.stride(), RHT=rht, BLOCK_R=block_r, BLOCK_K=256, num_warps=8)
    return amax


def quantize(x: torch.Tensor, amax: torch.Tensor | None, tile_rows: int = 1, *, rht: bool = False,
             seed: int | torch.Tensor | None = None, four_over_six: bool = False, out=None):
    """(data, scale, global_scale) exactly as ``format.quantize`` gives them (finite inputs).

    ``rht`` applies the recipe's Hadamard transform along K; a ``seed`` (0 <= seed < 2^64) turns
    on stochastic rounding with the reference's draws for that seed. The seed may be an int64
    tensor of one element on x's device (read by the kernel: no host sync, capturable in CUDA
    graphs), holding a value in [0, 2^63). ``four_over_six`` chooses each block's scale as
    ``format.four_over_six`` does (not with a seed). ``out`` = (data [R, Kp/2]
    uint8, scale [R, Kp/16] uint8, s_dec [1] fp32) receives the result (tests poison it first).
    """
    if tile_rows not in (1, 16):
        raise ValueError(f"tile_rows: expected 1 or 16, got {tile_rows}")
    if four_over_six and seed is not None:
        raise ValueError("four_over_six: chooses scales by reconstruction error; not with stochastic rounding (seed)")
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != x.device:
            raise ValueError(f"seed: expected a one-element int64 tensor on {x.device}, got {seed.dtype} "
                             f"{tuple(seed.shape)} on {seed.device}")
    elif seed is not None and not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an integer in [0, 2^64), got {seed}")
    x2 = _as_rows(x)
    rows, k = x2.shape
    kp = (k + 15) // 16 * 16
    amax = tensor_amax(x2, rht) if amax is None else amax.reshape(1).to(torch.float32)
    if out is None:
        out = (torch.empty(rows, kp // 2, dtype=torch.uint8, device=x.device),
               torch.empty(rows, kp // 16, dtype=torch.uint8, device=x.device),
               torch.empty(1, dtype=torch.float32, device=x.device))
    data, scale, s_dec = out
    if rows and k:
        grid = lambda meta: (triton.cdiv(rows, meta["BLOCK_R"]), triton.cdiv(kp, meta["BLOCK_K"]))  # noqa: E731
        in_memory = isinstance(seed, torch.Tensor)
        seed_lo, seed_hi = (0, 0) if seed is None or in_memory else (seed & 0xFFFFFFFF, seed >> 32)
        quantize_kernel[grid](x2, amax, data.view(torch.int32), scale, s_dec, rows, k, *x2.stride(),
                              seed_lo, seed_hi, seed if in_memory else amax, TILE_ROWS=tile_rows, RHT=rht,
                              STOCHASTIC=seed is not None, SEED_IN_MEMORY=in_memory,
                              FOUR_OVER_SIX=four_over_six)
    else:
        s_dec.fill_(1.0)
    lead = x.shape[:-1]
    return (data.view(*lead, kp // 2), scale.view(torch.float8_e4m3fn).view(*lead, kp // 16), s_dec.view(()))
