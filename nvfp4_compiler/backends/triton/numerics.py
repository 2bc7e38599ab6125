"""NVFP4_SPEC.md's element and scale arithmetic as Triton device functions.

Every function here reproduces the reference (``nvfp4_compiler.format``) bit for bit: fp32
products in the spec's order, IEEE-rounded division (``div_rn``, not Triton's approximate ``/``),
and E2M1 rounding done in integer arithmetic, so the interpreter and the GPU agree. Where the GPU
has an exact instruction for a step (E4M3 rounding, the packed E2M1 decode) the compiled kernels
use it and the interpreter keeps the arithmetic; tests check both against ml_dtypes.
"""

import os

import triton
import triton.language as tl

# Globals read inside @jit functions must be constexpr (the interpreter does not enforce it, the
# compiler does).
FLT_MAX = tl.constexpr(3.4028234663852886e38)
R6 = tl.constexpr(0.16666666666666666)  # rounds to the same fp32 as fp32(1) / fp32(6), the spec's r6


@triton.jit
def encode_scale(amax):
    """S_enc = 2688 / amax, clamped to FLT_MAX; amax = inf gives 1.0."""
    s_enc = tl.math.div_rn(tl.full(amax.shape, 2688.0, tl.float32), amax)
    s_enc = tl.minimum(s_enc, FLT_MAX)
    return tl.where(s_enc == 0.0, 1.0, s_enc)


@triton.jit
def tensor_scales(amax):
    """(S_enc, S_dec) of a per-tensor amax: S_dec = 1 / S_enc, IEEE-rounded as the spec's division."""
    s_enc = encode_scale(amax)
    return s_enc, tl.math.div_rn(tl.full(s_enc.shape, 1.0, tl.float32), s_enc)


# Compiled for a GPU (not the interpreter): hardware instructions where they are exact equivalents of
# the arithmetic; the interpreter cannot run PTX, and its fp8 cast does not round to nearest even.
COMPILED_FOR_GPU = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")


@triton.jit
def round_to_e4m3(b):
    """Round fp32 ``b`` in [0, 448] to E4M3, nearest-even. Returns (bits as int32, value as fp32).

    On a GPU this is the hardware conversion (sm_89+: cvt.rn.satfinite.e4m3x2.f32 and back through
    fp16), about 3 instructions per block instead of ~17: the quantize kernel is bound by its
    instruction count (6-9% faster at three of four Wan shapes on the H100). Both paths are
    checked against ml_dtypes on every E4M3 value, tie and neighbour (test_triton_backend.py)."""
    if COMPILED_FOR_GPU:
        f8 = b.to(tl.float8e4nv, fp_downcast_rounding="rtne")
        return f8.to(tl.uint8, bitcast=True).to(tl.int32), f8.to(tl.float32)
    return _round_to_e4m3_integer(b)


@triton.jit
def _round_to_e4m3_integer(b):
    """round_to_e4m3 in integer and fp32 arithmetic (the interpreter's path)."""
    # Subnormal range (b < 2^-6): multiples of 2^-9. Adding 2^23 makes fp32 addition round to an
    # integer, ties to even; the integer q (0..8) is also the E4M3 bit pattern (8 = 2^-6, normal).
    q = ((b * 512.0 + 8388608.0) - 8388608.0).to(tl.int32)
    sub_value = q.to(tl.float32) * 0.001953125
    # Normal range: keep 3 of the 23 mantissa bits, rounding to nearest even on the bit pattern.
    u = b.to(tl.int32, bitcast=True)
    u = (u + 0x7FFFF + ((u >> 20) & 1)) & ~0xFFFFF
    normal_value = u.to(tl.float32, bitcast=True)
    normal_bits = (((u >> 23) - 120) << 3) | ((u >> 20) & 7)
    is_sub = b < 0.015625
    return tl.where(is_sub, q, normal_bits), tl.where(is_sub, sub_value, normal_value)


@triton.jit
def block_scales(block_amax, s_enc, s_dec):
    """Per 16-element block: (E4M3 bits of its decode scale, as int32; the fp32 factor that maps
    the block onto E2M1's range), from the block's amax and the per-tensor encode/decode scales."""
    b_bits, _, encode = block_scale_candidate(block_amax, s_enc, s_dec, R6)
    return b_bits, encode


@triton.jit
def block_scale_candidate(block_amax, s_enc, s_dec, RECIPROCAL: tl.constexpr):
    """(E4M3 bits as int32, its fp32 value, element encode factor) of the block scale that maps
    the block max to 1 / RECIPROCAL: the spec's 6 with R6, Four Over Six's 4 with 0.25."""
    b = tl.minimum(block_amax * (s_enc * RECIPROCAL), FLT_MAX)
    b = tl.minimum(b, 448.0)
    b_bits, b_value = round_to_e4m3(b)
    encode = tl.minimum(tl.math.div_rn(tl.full(b_value.shape, 1.0, tl.float32), b_value * s_dec), FLT_MAX)
    return b_bits, b_value, encode


@triton.jit
def e2m1_encode(v):
    """E2M1 codes (int32, 0..15) of fp32 ``v``, saturating at +-6; sign from the sign bit.

    One fp32 addition rounds |v| to E2M1's grid, ties to even, and leaves the code in the sum's
    low bits. The quantize kernel is bound by its instructions per element: this encoder takes
    about 8 SASS instructions where the previous one (small and normal ranges apart, then a
    select) took 11, and the kernel ran 3-10% faster on the H100 (nineteenth session).
    E2M1's spacing is 2^(E-1) in binade E = 0, 1, 2 ([0, 2), [2, 4), [4, 6]): the ulp of
    M = 2^(E+22), so |v| + M rounds |v| to the grid in hardware. Adding 2E to M's bit pattern
    (2E more ulps: an even number, so ties still go to even) moves the sum's low mantissa bits
    from |v| / spacing (0..4 at E = 0, 2..4 at E = 1, 2..3 at E = 2) to exactly the code (0..4,
    4..6, 6..7): code = bits & 7. M's pattern is one multiply-add of |v|'s biased exponent,
    clamped below at 127 (E = 0 also covers E2M1's subnormal 0.5).
    """
    a = tl.minimum(tl.abs(v), 6.0)
    biased = tl.maximum(a.to(tl.int32, bitcast=True) >> 23, 127)
    magic = biased * 0x800002 + (0x4A800000 - 127 * 0x800002)        # 2^(E+22) + 2E ulps
    total = (a + magic.to(tl.float32, bitcast=True)).to(tl.int32, bitcast=True)
    sign = (v.to(tl.uint32, bitcast=True) >> 28).to(tl.int32)          # bit 3: the sign
    return sign ^ ((sign ^ total) & 7)                                  # bits 0-2 from total: one LOP3


@triton.jit
def pack_codes_words(codes):
    """int32 E2M1 codes [..., 8] -> int32 words [...], code j in bits 4j..4j+3: on a
    little-endian GPU a word's bytes are the spec's packing (element 2i in the low nibble of
    byte i), so a thread holding 8 neighbouring codes writes them in one store."""
    shifted = codes << (4 * tl.arange(0, 8))
    return tl.sum(shifted, axis=len(codes.shape) - 1)  # disjoint nibbles: the sum is the bitwise or


@triton.jit
def store_packed_tile(data_ptr, scale_ptr, rows, n_rows, col0, KP, words, b_bits):
    """Store a tile of an NVFP4 tensor with KP (padded) columns: ``words`` [len(rows), W]
    (pack_codes_words: 8 codes each) at int32 word columns col0/8.. of data [R, KP/8], and its E4M3
    scale bits ``b_bits`` [len(rows), W/2] at byte columns col0/16.. of scale [R, KP/16]. Rows
    from ``n_rows`` and columns from KP on are masked (the layout quantize.py documents)."""
    WORDS: tl.constexpr = words.shape[1]
    BLOCKS: tl.constexpr = b_bits.shape[1]
    row_ok = rows[:, None] < n_rows
    word_cols = col0 // 8 + tl.arange(0, WORDS)
    tl.store(data_ptr + rows[:, None] * (KP // 8) + word_cols[None, :], words,
             mask=row_ok & (word_cols[None, :] < KP // 8))
    scale_cols = col0 // 16 + tl.arange(0, BLOCKS)
    tl.store(scale_ptr + rows[:, None] * (KP // 16) + scale_cols[None, :], b_bits.to(tl.uint8),
             mask=row_ok & (scale_cols[None, :] < KP // 16))


# Four packed bytes ($4) and their four fp16 scales ($5, $6) -> the four low nibbles ($0, $1) and
# the four high nibbles ($2, $3) as fp16 pairs. prmt spreads bytes 0,1 (and 2,3) into the two
# 16-bit lanes of a register, so each shift/mask/or below builds two fp16 bit patterns at once:
# magnitude bits 2..0 -> fp16 bits 11..9 (2^-14 x the E2M1 value), sign bit 3 -> bit 15; one
# mul.f16x2 applies the scales. Values stay packed two to a register, so the tiles hold fewer
# registers than with one int32 per element (GEMM tile kernel: -8 to -15%, register_report.py).
E2M1_PAIRS_PTX = tl.constexpr("""
{
.reg .b32 z, t0, t1, a, b;
mov.b32 z, 0;
prmt.b32 t0, $4, z, 0x4140;
prmt.b32 t1, $4, z, 0x4342;
shl.b32 a, t0, 9;  and.b32 a, a, 0x0E000E00; shl.b32 b, t0, 12; and.b32 b, b, 0x80008000;
or.b32 a, a, b; mul.rn.f16x2 $0, a, $5;
shl.b32 a, t1, 9;  and.b32 a, a, 0x0E000E00; shl.b32 b, t1, 12; and.b32 b, b, 0x80008000;
or.b32 a, a, b; mul.rn.f16x2 $1, a, $6;
shl.b32 a, t0, 5;  and.b32 a, a, 0x0E000E00; shl.b32 b, t0, 8;  and.b32 b, b, 0x80008000;
or.b32 a, a, b; mul.rn.f16x2 $2, a, $5;
shl.b32 a, t1, 5;  and.b32 a, a, 0x0E000E00; shl.b32 b, t1, 8;  and.b32 b, b, 0x80008000;
or.b32 a, a, b; mul.rn.f16x2 $3, a, $6;
}
""")


@triton.jit
def to_f32(x):
    """fp32 / bf16 / fp16 ``x`` as fp32 (exact). bf16 on a GPU: a pair per 32-bit register, one
    shift or mask per element (Triton's cast spends a prmt and a multiply on the upper one)."""
    if COMPILED_FOR_GPU and x.dtype == tl.bfloat16:
        return tl.inline_asm_elementwise("shl.b32 $0, $2, 16;\n and.b32 $1, $2, 0xFFFF0000;", "=r,=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=2)
    return x.to(tl.float32)


@triton.jit
def _e2m1_bits_f16(codes):
    """E2M1 codes (int32 0..15) as fp16 bit patterns worth 2^-14 x the value (no multiply)."""
    bits = ((codes & 7) << 9) | ((codes & 8) << 12)
    return bits.to(tl.int16).to(tl.float16, bitcast=True)


@triton.jit
def decode_e2m1_pairs(packed, scale):
    """(low nibbles, high nibbles) of uint8 ``packed`` as fp16, each value 2^-14 x E2M1 x ``scale``
    (fp16, broadcast to ``packed``'s shape). Exact whenever the product fits fp16 with its <= 6
    significant bits (callers pick the scale's power of two for that)."""
    if COMPILED_FOR_GPU:
        even, odd = tl.inline_asm_elementwise(
            E2M1_PAIRS_PTX, "=r,=r,=r,=r,r,r,r", [packed, scale],
            dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
    else:
        codes = packed.to(tl.int32)
        even = _e2m1_bits_f16(codes & 0xF) * scale
        odd = _e2m1_bits_f16(codes >> 4) * scale
    return even, odd


@triton.jit
def e4m3_decode_f16(bits):
    """fp16 value of E4M3 bit patterns (int32 0..255), exact (subnormals included)."""
    f16 = ((bits & 0x80) << 8) | ((bits & 0x7F) << 7)
    return f16.to(tl.int16).to(tl.float16, bitcast=True) * 256.0


@triton.jit
def to_bf16_rne(y):
    """fp32 -> bf16, round to nearest even, on the bit pattern (the Triton 3.9 interpreter's own
    conversion truncates, so an explicit rounding keeps CPU tests and GPU runs identical)."""
    u = y.to(tl.int32, bitcast=True)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)


# The RHT's negative signs (format.hadamard.RHT_SIGNS) as a bit mask: bit i set where s_i = -1.
RHT_NEGATIVE_MASK = tl.constexpr(0xD7E8)


@triton.jit
def _butterfly_stage(x, ROWS: tl.constexpr, NB: tl.constexpr, H: tl.constexpr):
    """One Walsh-Hadamard stage on [ROWS, NB, 16]: element i pairs with i + H inside blocks of
    2H and becomes (a + b, a - b), as ``format.hadamard.hadamard_butterfly``."""
    g = tl.permute(tl.reshape(x, (ROWS, NB, 16 // (2 * H), 2, H)), (0, 1, 2, 4, 3))
    a, b = tl.split(g)
    g = tl.permute(tl.join(a + b, a - b), (0, 1, 2, 4, 3))
    return tl.reshape(g, (ROWS, NB, 16))


@triton.jit
def rht16(blocks, ROWS: tl.constexpr, NB: tl.constexpr):
    """The recipe's RHT of fp32 ``blocks`` [ROWS, NB, 16] in the reference's order: signs, four
    butterfly stages, x0.25."""
    lane = tl.arange(0, 16)
    negative = (tl.full((16,), RHT_NEGATIVE_MASK, tl.int32) >> lane) & 1
    signs = 1.0 - 2.0 * negative.to(tl.float32)
    x = blocks * signs[None, None, :]
    x = _butterfly_stage(x, ROWS, NB, 1)
    x = _butterfly_stage(x, ROWS, NB, 2)
    x = _butterfly_stage(x, ROWS, NB, 4)
    x = _butterfly_stage(x, ROWS, NB, 8)
    return x * 0.25


@triton.jit
def _fmix32(h):
    h ^= h >> 16
    h *= 0x85EBCA6B
    h ^= h >> 13
    h *= 0xC2B2AE35
    return h ^ (h >> 16)


@triton.jit
def rounding_uniform(index, seed_lo, seed_hi):
    """U[0, 1) per element from its uint32 index, as ``format.quantize.rounding_uniform``."""
    h = _fmix32(index ^ seed_lo)
    h = _fmix32(h ^ seed_hi)
    return (h >> 8).to(tl.float32) * 5.9604644775390625e-08  # 2^-24


@triton.jit
def _e2m1_magnitude(i):
    """The E2M1 magnitude with index ``i`` (0..7): 0, 0.5, 1, 1.5, 2, 3, 4, 6."""
    return tl.where(i <= 4, i.to(tl.float32) * 0.5, tl.where(i == 5, 3.0, tl.where(i == 6, 4.0, 6.0)))


@triton.jit
def e2m1_encode_stochastic(v, u):
    """Stochastic E2M1 codes of fp32 ``v`` in [-6, 6] with draws ``u``, as the reference's
    ``e2m1_encode_stochastic``: up to the next magnitude with probability (|v| - lo) / gap."""
    a = tl.abs(v)
    lower = (a >= 0.5).to(tl.int32) + (a >= 1.0).to(tl.int32) + (a >= 1.5).to(tl.int32)
    lower += (a >= 2.0).to(tl.int32) + (a >= 3.0).to(tl.int32) + (a >= 4.0).to(tl.int32) + (a >= 6.0).to(tl.int32)
    lower = tl.minimum(lower, 6)
    lo = _e2m1_magnitude(lower)
    # (a - lo) / gap: the gaps (0.5, 1, 2) are powers of two, so the product with 1 / gap is the
    # IEEE quotient exactly, without a division per element
    p_up = (a - lo) * tl.where(lower < 4, 2.0, tl.where(lower < 6, 1.0, 0.5))
    idx = lower + (u < p_up).to(tl.int32)
    sign = (v.to(tl.int32, bitcast=True) >> 31) & 1
    return idx | (sign << 3)


#: ``decode_nvfp4_tile``'s values carry 2^-7 (multiply by this to undo it).
DECODED_TILE_UNSCALE = tl.constexpr(128.0)


@triton.jit
def decode_nvfp4_tile(packed, scale_bits):
    """Rows of NVFP4: ``packed`` uint8 [R, C/2] and their E4M3 block-scale bits (int32 [R, C/16])
    -> the even and odd elements of each row, fp16 [R, C/2] each, worth 2^-7 x E2M1 x E4M3.

    One multiply per element: (E2M1 x 2^-14, straight from the bits) x (E4M3 x 2^7). Every product
    has at most 6 significant bits between 2^-17 and 21, so it is exact in fp16. Element 2i is
    byte i's low nibble and 2i+1 its high one; both share the block scale of byte i // 8.
    """
    scale = (e4m3_decode_f16(scale_bits) * DECODED_TILE_UNSCALE)[:, :, None]  # <= 448 x 128 = 57344
    even, odd = decode_e2m1_pairs(tl.reshape(packed, (packed.shape[0], packed.shape[1] // 8, 8)), scale)
    return tl.reshape(even, (packed.shape[0], packed.shape[1])), tl.reshape(odd, (packed.shape[0], packed.shape[1]))


# --- Exact integer dot products of 16-element NVFP4 blocks (the GEMV and decode attention) ----
#
# Twice an E2M1 value is an integer (0, 1, 2, 3, 4, 6, 8, 12 and negatives), so the dot product of
# two 16-blocks is 1/4 of an integer of at most 16 x 144 = 2304: exact in int32 and in fp32. On the
# GPU a block (one int64, code j in bits 4j..4j+3) is turned into four int32 words of signed bytes
# by a 16-entry table held in registers (prmt picks bytes by a nibble), and dp4a sums four byte
# products per instruction: about 3 SASS instructions per element where fp16 decode + fp32 FMAs
# took 11.

def _ptx_block_to_bytes(code_reg: str, out_reg: str) -> str:
    """PTX: the four codes in the low 16 bits of ``code_reg`` -> four signed bytes of 2 x value."""
    return f"""
and.b32 m, {code_reg}, 0x7777;
prmt.b32 p, pos_lo, pos_hi, m;
prmt.b32 n, neg_lo, neg_hi, m;
shr.b32 t, {code_reg}, 1;
and.b32 t, t, 0x4444;
or.b32 t, t, 0x3210;
prmt.b32 {out_reg}, p, n, t;"""
    # m: magnitude indices (0..7) select bytes of the positive and negative tables; t: selector i
    # + 4 x sign bit takes byte i of p or of n.


def _ptx_block_asm(block_operand: str, outputs: list[str], dot_operands: list[str] | None = None,
                   lower_planes: tuple[list[str], ...] = ()) -> str:
    """PTX for one int64 block: its four byte words into ``outputs``, or with ``dot_operands`` (four
    words of the other block) their dp4a sum into ``outputs[0]``. With ``lower_planes`` the other
    block has wider integers: ``dot_operands`` hold their signed top bytes, each plane (four words)
    the next unsigned bytes down, and the sum is assembled as sum_top x 256 + sum_next, and so on."""
    accs = ["acc"] + [f"acc{i}" for i in range(len(lower_planes))]
    lines = ["{", f".reg .b32 lo, hi, c, m, p, n, t, v, {', '.join(accs)}, pos_lo, pos_hi, neg_lo, neg_hi;",
             f"mov.b64 {{lo, hi}}, {block_operand};",
             # 2 x E2M1 magnitude of codes 0..7 as bytes (little-endian), and its negation for 8..15
             "mov.b32 pos_lo, 0x03020100;", "mov.b32 pos_hi, 0x0C080604;",
             "mov.b32 neg_lo, 0xFDFEFF00;", "mov.b32 neg_hi, 0xF4F8FAFC;"]
    for q, (half, shift) in enumerate([("lo", False), ("lo", True), ("hi", False), ("hi", True)]):
        src = half
        if shift:
            lines.append(f"shr.b32 c, {half}, 16;")
            src = "c"
        if dot_operands is None:
            lines.append(_ptx_block_to_bytes(src, outputs[q]))
            continue
        lines.append(_ptx_block_to_bytes(src, "v"))
        for acc, words, kind in zip(accs, (dot_operands, *lower_planes), ["s32"] + ["u32"] * len(lower_planes)):
            lines.append(f"dp4a.s32.{kind} {acc}, v, {words[q]}, {acc if q else 0};")
    if dot_operands is not None:
        for acc in accs[1:]:
            lines.append(f"mad.lo.s32 acc, acc, 256, {acc};")
        lines.append(f"mov.b32 {outputs[0]}, acc;")
    return "\n".join(lines + ["}"])


_BLOCK_BYTES_PTX = tl.constexpr(_ptx_block_asm("$4", ["$0", "$1", "$2", "$3"]))
_BLOCK_DOT_PTX = tl.constexpr(_ptx_block_asm("$1", ["$0"], ["$2", "$3", "$4", "$5"]))
_BLOCK_DOT_FIXED24_PTX = tl.constexpr(_ptx_block_asm("$1", ["$0"], ["$2", "$3", "$4", "$5"],
                                                     (["$6", "$7", "$8", "$9"], ["$10", "$11", "$12", "$13"])))


@triton.jit
def e2m1_value(codes):
    """Signed fp32 E2M1 value of int32 codes 0..15 (bit 3 the sign)."""
    magnitude = _e2m1_magnitude(codes & 7)
    return tl.where((codes & 8) != 0, -magnitude, magnitude)


@triton.jit
def _e2m1_doubled(codes):
    """2 x the E2M1 value of int codes 0..15, as integers (the interpreter's path)."""
    return (e2m1_value(codes) * 2.0).to(tl.int32)


@triton.jit
def _code(blocks, j: tl.constexpr):
    """Code j (bits 4j..4j+3) of int64 blocks, as int32."""
    return ((blocks >> (4 * j)) & 15).to(tl.int32)


@triton.jit
def _doubled_bytes_word(blocks, first_code: tl.constexpr):
    """Interpreter's path: 2 x E2M1 of codes first_code..first_code+3 as the signed bytes of a word."""
    word = tl.zeros(blocks.shape, tl.int32)
    for i in tl.static_range(4):
        word |= (_e2m1_doubled(_code(blocks, first_code + i)) & 0xFF) << (8 * i)
    return word


@triton.jit
def e2m1_block_bytes(blocks):
    """int64 NVFP4 blocks -> four int32 words each, word q holding 2 x the E2M1 values of codes
    4q..4q+3 as signed bytes (byte i = code 4q + i): ``e2m1_block_dot``'s other operand."""
    if COMPILED_FOR_GPU:
        return tl.inline_asm_elementwise(_BLOCK_BYTES_PTX, "=r,=r,=r,=r,l", [blocks],
                                         dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=1)
    else:
        return (_doubled_bytes_word(blocks, 0), _doubled_bytes_word(blocks, 4), _doubled_bytes_word(blocks, 8),
                _doubled_bytes_word(blocks, 12))


@triton.jit
def e2m1_block_dot(blocks, b0, b1, b2, b3):
    """sum_j (2 a_j)(2 b_j) over each 16-block pair, int32 and exact: ``blocks`` int64 (codes), the
    other block as ``e2m1_block_bytes`` words b0..b3 (broadcast to ``blocks``' shape)."""
    if COMPILED_FOR_GPU:
        return tl.inline_asm_elementwise(_BLOCK_DOT_PTX, "=r,l,r,r,r,r", [blocks, b0, b1, b2, b3],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        return _doubled_dot(blocks, _plane_bytes(b0, b1, b2, b3, True))


@triton.jit
def _plane_bytes(w0, w1, w2, w3, SIGNED: tl.constexpr):
    """Interpreter's path: four words (any shape, N elements) -> their bytes [N, 16], byte 4q + i
    = byte i of word q (signed or unsigned)."""
    n: tl.constexpr = w0.numel
    words = tl.reshape(tl.join(tl.join(tl.reshape(w0, (n,)), tl.reshape(w2, (n,))),
                               tl.join(tl.reshape(w1, (n,)), tl.reshape(w3, (n,)))), (n, 4))
    shifts = tl.arange(0, 4) * 8
    if SIGNED:
        b = (words[:, :, None] << (24 - shifts)[None, None, :]) >> 24
    else:
        b = (words[:, :, None] >> shifts[None, None, :]) & 0xFF
    return tl.reshape(b, (n, 16))


@triton.jit
def _doubled_dot(blocks, x):
    """Interpreter's path: sum_j (2 x E2M1 code j of ``blocks``) x[:, j], shaped like ``blocks``;
    x [N, 16] as ``_plane_bytes`` gives it."""
    n: tl.constexpr = blocks.numel
    codes = (tl.reshape(blocks, (n,))[:, None] >> (tl.arange(0, 16) * 4).to(tl.int64)[None, :]) & 15
    return tl.reshape(tl.sum(_e2m1_doubled(codes.to(tl.int32)) * x, 1), blocks.shape)


@triton.jit
def e2m1_block_dot_fixed24(blocks, t0, t1, t2, t3, m0, m1, m2, m3, l0, l1, l2, l3):
    """sum_j (2 a_j) x_j over each 16-block of ``blocks`` (int64), int32 and exact, where
    x_j = 2^16 t_j + 2^8 m_j + l_j is a 24-bit integer given as three planes of four words: its
    signed top bytes (t), then its unsigned middle (m) and low (l) bytes, byte i of word q
    belonging to code 4q + i (each broadcast to ``blocks``' shape). |sum| <= 16 x 12 x 2^23 < 2^31."""
    if COMPILED_FOR_GPU:
        return tl.inline_asm_elementwise(_BLOCK_DOT_FIXED24_PTX, "=r,l" + ",r" * 12,
                                         [blocks, t0, t1, t2, t3, m0, m1, m2, m3, l0, l1, l2, l3],
                                         dtype=tl.int32, is_pure=True, pack=1)
    else:
        x = ((_plane_bytes(t0, t1, t2, t3, True) * 256 + _plane_bytes(m0, m1, m2, m3, False)) * 256
             + _plane_bytes(l0, l1, l2, l3, False))
        return _doubled_dot(blocks, x)
