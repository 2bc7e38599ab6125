"""Triton kernels against the reference backend: packed bytes and scales bit for bit, GEMM outputs
within fp32 accumulation-order noise. On CPU they run under TRITON_INTERPRET=1 at small shapes;
with NVFP4_TEST_ON_GPU=1 on a CUDA machine the same tests run compiled, plus larger shapes."""

import functools
import os

import ml_dtypes
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

import nvfp4_compiler as nvfp4
from nvfp4_compiler.backends import reference
from nvfp4_compiler.backends.triton import numerics
from nvfp4_compiler.backends.triton import gemm as tgemm
from nvfp4_compiler.backends.triton import quantize as tquant

ON_GPU = os.environ.get("NVFP4_TEST_ON_GPU") == "1"
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
if ON_GPU and not torch.cuda.is_available():
    # asked for GPU tests where there is no GPU: a setup error, not something to skip quietly
    raise RuntimeError("NVFP4_TEST_ON_GPU=1 asks for the GPU tests, but torch sees no CUDA device")
ON_HOPPER = ON_GPU and torch.cuda.get_device_capability()[0] == 9

POISONS = (0xA5, 0x5A)  # two runs with different poison: an unwritten byte shows in one of them


def _quantize_poisoned(x, amax, tile_rows, **kw):
    rows = x.reshape(-1, x.shape[-1]).shape[0]
    kp = (x.shape[-1] + 15) // 16 * 16
    results = []
    for poison in POISONS:
        out = (torch.full((rows, kp // 2), poison, dtype=torch.uint8, device=x.device),
               torch.full((rows, kp // 16), poison, dtype=torch.uint8, device=x.device),
               torch.full((1,), float("nan"), device=x.device))
        results.append(tquant.quantize(x, amax, tile_rows, out=out, **kw))
    (d0, s0, g0), (d1, s1, g1) = results
    assert torch.equal(d0, d1) and torch.equal(s0.view(torch.uint8), s1.view(torch.uint8)) and torch.equal(g0, g1)
    return d0, s0, g0


def _assert_same_as_reference(x, block=(1, 16), amax=None, rht=False, seed=None):
    d, s, g = _quantize_poisoned(x, None if amax is None else torch.tensor(amax, device=x.device), block[0],
                                 rht=rht, seed=seed)
    ref = nvfp4.quantize(x.cpu(), block=block, amax=amax, rht=rht, stochastic=seed is not None, seed=seed)
    assert torch.equal(d.cpu(), ref.data)
    assert torch.equal(s.view(torch.uint8).cpu(), ref.scale.view(torch.uint8))
    assert torch.equal(g.cpu(), ref.global_scale)


SHAPES = [(1, 16), (3, 20), (17, 64), (2, 5, 48), (40, 130)] + ([(1000, 4096), (4680, 1536)] if ON_GPU else [])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_quantize_bit_identical_random(shape, dtype):
    gen = torch.Generator().manual_seed(hash(shape) % 2**31)
    x = (torch.randn(shape, generator=gen) * torch.logspace(-4, 4, shape[-1])).to(dtype).to(DEVICE)
    _assert_same_as_reference(x)


@pytest.mark.parametrize("shape", [(16, 16), (32, 40), (48, 96)] + ([(2048, 1536)] if ON_GPU else []))
def test_quantize_16x16_bit_identical(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    _assert_same_as_reference(x, block=(16, 16))


def test_quantize_edge_cases_bit_identical():
    grid = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6]) * 448
    ties = torch.tensor([0.125, 0.375, 0.625, 0.875, 1.25, 1.75, 2.5, 3.0])
    rows = torch.stack([
        torch.cat([grid, -grid]),                                   # amax 2688: S_enc = 1
        torch.cat([ties, -ties]),                                   # every value a tie
        torch.full((16,), -0.0),                                    # -0 keeps its sign bit
        torch.zeros(16),                                            # zero block scale
        torch.tensor([1e-30] * 8 + [3e-3] * 8),                     # subnormal/underflowing scales
        torch.tensor([float("inf"), -float("inf")] + [1.0] * 14),   # saturation
    ])
    _assert_same_as_reference(rows.to(DEVICE))
    _assert_same_as_reference(torch.zeros(4, 32, device=DEVICE))
    _assert_same_as_reference(torch.randn(4, 32, device=DEVICE), amax=0.5)   # static amax, saturating
    _assert_same_as_reference(torch.randn(4, 32, device=DEVICE), amax=0.0)


def test_quantize_autotuner_keeps_only_tiles_that_hold_whole_16x16_scale_tiles():
    """The GPU's tile list includes row counts under 16 (wide rows for 1x16 blocks); 16x16 blocks
    must never get them (their amax is reduced over 16 rows of one program)."""
    configs = [triton.Config({"BLOCK_R": r, "BLOCK_K": k}, num_warps=w) for r, k, w in tquant.GPU_TILES]
    assert any(c.kwargs["BLOCK_R"] < 16 for c in configs)
    square = tquant._prune(configs, {"K": 4096}, TILE_ROWS=16)
    assert square and all(c.kwargs["BLOCK_R"] % 16 == 0 for c in square)
    assert len(tquant._prune(configs, {"K": 4096}, TILE_ROWS=1)) == len(configs)
    assert all(c.kwargs["BLOCK_K"] <= 64 for c in tquant._prune(configs, {"K": 50}, TILE_ROWS=1))


@pytest.mark.parametrize("shape", [(3, 20), (17, 64), (40, 130)] + ([(1024, 4096), (1536, 4680)] if ON_GPU else []))
@pytest.mark.parametrize("rht,seed", [(True, None), (False, 12345), (True, 2**63 + 99)])
@pytest.mark.parametrize("transposed", [False, True])
def test_quantize_training_operands_bit_identical(shape, rht, seed, transposed):
    """The recipe's wgrad/dgrad operands: RHT (butterfly order) and stochastic rounding (the
    reference's counter-hash draws) give the reference's bytes on both backends. ``transposed``:
    x is a transposed view (how the wgrad operands x^T and dy^T are read, no copy), with K (the
    token count) not a multiple of 16, so the zero padding enters the RHT."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(shape[::-1] if transposed else shape, generator=gen).to(DEVICE, torch.bfloat16)
    x = x.T if transposed else x
    assert x.shape == shape and x.is_contiguous() != transposed
    _assert_same_as_reference(x, rht=rht, seed=seed)


def test_stochastic_draws_depend_on_seed_and_rht_amax_is_the_transformed_one():
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    a, _, _ = tquant.quantize(x, None, seed=1)
    b, _, _ = tquant.quantize(x, None, seed=2)
    assert not torch.equal(a, b)
    # a seed the kernel reads from device memory (how training passes it) draws the same bits
    for seed in (2, 2**40 + 12345):
        as_int, _, _ = tquant.quantize(x, None, seed=seed, rht=True)
        in_memory, _, _ = tquant.quantize(x, None, seed=torch.tensor([seed], device=DEVICE), rht=True)
        assert torch.equal(as_int, in_memory)
    with pytest.raises(ValueError, match="seed"):
        tquant.quantize(x, None, seed=torch.tensor([2], dtype=torch.int32, device=DEVICE))
    want = nvfp4.format.rht(x.cpu()).abs().max()
    assert torch.equal(tquant.tensor_amax(x, rht=True).cpu().view(()), want)


@triton.jit
def _encode_and_pack_kernel(v_ptr, codes_ptr, words_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    codes = numerics.e2m1_encode(tl.load(v_ptr + offs))
    tl.store(codes_ptr + offs, codes)
    words = numerics.pack_codes_words(tl.reshape(codes, (1, BLOCK // 8, 8)))
    word_offs = tl.program_id(0) * (BLOCK // 8) + tl.arange(0, BLOCK // 8)
    tl.store(words_ptr + word_offs[None, :], words)


def test_e2m1_encoder_and_word_packing_match_ml_dtypes_and_the_reference():
    """The kernels' bit-pattern encoder on a dense grid, every tie, one ulp either side of every
    tie and grid point, huge values (saturation) and signed zeros and subnormals; the word
    packing against the reference's byte packing."""
    points = np.array([0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3, 3.5, 4, 5, 6], np.float32)
    near = np.concatenate([points, np.nextafter(points, np.float32(-1)), np.nextafter(points, np.float32(10))])
    values = np.concatenate([np.linspace(0, 6, 2**16 - 3 * points.size - 5, dtype=np.float32), near,
                             np.array([1e-45, 1e-38, 6.0001, 1e30, 3e38], np.float32)])
    values = np.concatenate([values, -values])  # 2^17 values; -0.0 among them
    v = torch.from_numpy(values).to(DEVICE)
    codes = torch.full(v.shape, -1, dtype=torch.int32, device=DEVICE)
    words = torch.full((v.numel() // 8,), -1, dtype=torch.int32, device=DEVICE)
    _encode_and_pack_kernel[(v.numel() // 1024,)](v, codes, words, BLOCK=1024)
    ours = codes.cpu().numpy()
    in_range = np.abs(values) <= 6
    theirs = values[in_range].astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F
    np.testing.assert_array_equal(ours[in_range], theirs)
    np.testing.assert_array_equal(ours, nvfp4.format.e2m1_encode(torch.from_numpy(values)).numpy())
    packed = nvfp4.format.pack_nibbles(torch.from_numpy(ours).to(torch.uint8))
    assert torch.equal(words.cpu().view(torch.uint8), packed)


@triton.jit
def _round_to_e4m3_kernel(b_ptr, bits_ptr, values_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    bits, values = numerics.round_to_e4m3(tl.load(b_ptr + offs))
    tl.store(bits_ptr + offs, bits)
    tl.store(values_ptr + offs, values)


def test_block_scale_rounding_matches_ml_dtypes_e4m3():
    """round_to_e4m3 (integer arithmetic in the interpreter, the hardware conversion on a GPU) on
    every E4M3 value, every midpoint between neighbours (ties to even), one ulp either side of
    each, and random values over [0, 448], subnormals included."""
    grid = np.arange(0, 127, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    mids = (grid[:-1] + grid[1:]) / 2  # exact in fp32
    near = np.concatenate([grid, mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(448))])
    rng = np.random.default_rng(0)
    n = 8192
    values = np.concatenate([near, rng.uniform(0, 448, n).astype(np.float32),
                             rng.uniform(0, 2**-6, n).astype(np.float32)])
    values = np.concatenate([values, np.zeros(-values.size % 1024, np.float32)])
    b = torch.from_numpy(values).to(DEVICE)
    bits = torch.full(b.shape, -1, dtype=torch.int32, device=DEVICE)
    got = torch.full(b.shape, float("nan"), device=DEVICE)
    _round_to_e4m3_kernel[(b.numel() // 1024,)](b, bits, got, BLOCK=1024)
    want = values.astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(bits.cpu().numpy(), want.view(np.uint8).astype(np.int32))
    np.testing.assert_array_equal(got.cpu().numpy(), want.astype(np.float32))


@triton.jit
def _block_dot_kernel(a_ptr, b_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a, b = tl.load(a_ptr + offs), tl.load(b_ptr + offs)
    b0, b1, b2, b3 = numerics.e2m1_block_bytes(b)
    tl.store(out_ptr + offs, numerics.e2m1_block_dot(a, b0, b1, b2, b3))


def test_e2m1_block_dot_is_exact_for_every_code_pair_in_every_position():
    """The GEMV's integer block dot product (byte table + dp4a on the GPU) equals the sum of
    (2a)(2b) over the 16 positions, with values from ml_dtypes' E2M1, for all 256 code pairs at
    each position (block r pairs codes (r + j) % 16 and (r // 16 + 3j) % 16 at position j) and
    for random blocks."""
    r = np.arange(256)[:, None]
    j = np.arange(16)[None, :]
    codes_a = np.concatenate([(r + j) % 16, np.random.default_rng(0).integers(0, 16, (768, 16))])
    codes_b = np.concatenate([(r // 16 + 3 * j) % 16, np.random.default_rng(1).integers(0, 16, (768, 16))])

    def blocks(codes):  # code j in bits 4j..4j+3 of an int64
        return torch.from_numpy(nvfp4.format.pack_nibbles(torch.from_numpy(codes.astype(np.uint8))).numpy()
                                .view(np.int64).copy()).reshape(-1).to(DEVICE)

    out = torch.full((codes_a.shape[0],), -(2**31), dtype=torch.int32, device=DEVICE)
    _block_dot_kernel[(codes_a.shape[0] // 256,)](blocks(codes_a), blocks(codes_b), out, BLOCK=256)
    value = lambda c: c.astype(np.uint8).view(ml_dtypes.float4_e2m1fn).astype(np.float64)  # noqa: E731
    want = (2 * value(codes_a) * 2 * value(codes_b)).sum(axis=1)
    np.testing.assert_array_equal(out.cpu().numpy(), want.astype(np.int32))


def test_quantize_non_contiguous_and_amax_kernel():
    x = torch.randn(64, 48, device=DEVICE).T
    _assert_same_as_reference(x)
    assert torch.equal(tquant.tensor_amax(x).cpu().view(()), x.abs().max().cpu())


def _operands(lead, n, k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, w = torch.randn(*lead, k, generator=gen), torch.randn(n, k, generator=gen)
    xq, wq = nvfp4.quantize(x), nvfp4.quantize(w)
    return [t.to(DEVICE) for t in (xq.data, xq.scale, xq.global_scale, wq.data, wq.scale, wq.global_scale)]


GEMM_CASES = [
    # lead, n, k, activation, bias, gate shape (None / broadcast), residual, out dtype
    ((1,), 32, 64, "none", False, None, False, torch.float32),
    ((1,), 40, 160, "gelu_tanh", True, None, True, torch.bfloat16),    # GEMV, K split in 5
    ((7,), 40, 48, "gelu_tanh", True, None, False, torch.float32),
    ((33,), 64, 80, "silu", True, None, True, torch.bfloat16),
    ((2, 9), 48, 96, "gelu", True, (2, 1, 48), True, torch.bfloat16),
    ((3, 5), 16, 32, "relu", False, (16,), False, torch.float16),
]
if ON_GPU:
    GEMM_CASES += [((1,), 8960, 1536, "gelu_tanh", True, None, False, torch.bfloat16),
                   ((1,), 1536, 8960, "none", True, (1, 1536), True, torch.bfloat16),
                   ((64,), 1536, 8960, "none", True, (1, 1536), True, torch.bfloat16),
                   ((4680,), 1536, 1536, "none", True, None, True, torch.bfloat16),
                   ((1, 4680), 8960, 1536, "gelu_tanh", True, None, False, torch.bfloat16),
                   ((7,), 40, 256, "gelu_tanh", True, None, True, torch.bfloat16),    # N short of a tile
                   ((3, 11), 200, 768, "silu", True, (3, 1, 200), True, torch.float32)]


def _takes(path: str, lead, k: int) -> bool:
    """Whether a forced ``path`` applies: "vector" (the GEMV kernel) takes one row; "wgmma" (the
    Gluon kernel for M <= 64, gemm_wgmma.py) Hopper GPUs and K a multiple of 256."""
    m = torch.Size(lead).numel()
    return {"vector": m == 1, "wgmma": ON_HOPPER and m <= 64 and k % 256 == 0}.get(path, True)


# Every case on every kernel that takes it (_takes); "dense" is the decoded-operand GEMM through TMA
# (Hopper and later), "dense_pointer" the same without TMA.
GEMM_PATHS = [(*case, path) for case in GEMM_CASES
              for path in ("auto", "split3", "dense", "dense_pointer", "vector", "wgmma") if _takes(path, case[0], case[2])]
FORCED = {"auto": {}, "split3": {"split_k": 3}, "dense": {"dense": True}, "dense_pointer": {"dense": True},
          "vector": {"vector": True}, "wgmma": {"wgmma": True}}


@pytest.mark.parametrize("lead,n,k,act,has_bias,gate_shape,has_res,dtype,path", GEMM_PATHS)
def test_gemm_matches_reference(lead, n, k, act, has_bias, gate_shape, has_res, dtype, path, monkeypatch):
    from nvfp4_compiler.backends.triton import dense_gemm

    if path == "dense_pointer":
        monkeypatch.setattr(dense_gemm, "has_tma", lambda device: False)
    args = _operands(lead, n, k)
    gen = torch.Generator().manual_seed(5)
    bias = torch.randn(n, generator=gen).to(DEVICE) if has_bias else None
    gate = torch.randn(gate_shape, generator=gen).to(DEVICE, dtype) if gate_shape else None
    res = torch.randn(*lead, n, generator=gen).to(DEVICE, dtype) if has_res else None
    m = int(torch.Size(lead).numel())
    out = torch.full((m, n), float("nan"), dtype=dtype, device=DEVICE)  # poisoned: every element must be written
    got, amax = tgemm.gemm(*args, bias, act, gate, res, dtype, out=out, **FORCED[path])
    want, want_amax = reference.gemm_op(*args, bias, act, gate, res, dtype)
    assert got.shape == want.shape
    assert torch.isfinite(got).all()
    tol = {torch.float32: 1e-5, torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    err = (got.float() - want.float()).norm() / want.float().norm()
    assert err < tol, err
    assert torch.allclose(amax, want_amax, rtol=tol)
    assert amax.data_ptr() % 16 == 0  # Inductor asserts 16-byte aligned outputs of the op


E2M1_GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _exact_sum_operands(lead, n, k, seed):
    """NVFP4 operands whose GEMM is exact in fp32 in any summation order: every 16-block holds a
    +-6, so all block scales are 448 and the values are E2M1 grid points; products are then
    multiples of 1/4 x 448^2 (reference) or 49/16 (the kernels' fp16 tiles) of at most 36 x that,
    and with K <= 2000 every partial sum stays exact. All kernel paths, split-K atomics included,
    so reach the reference's accumulator bit for bit."""
    gen = torch.Generator().manual_seed(seed)

    def grid_tensor(*shape):
        values = E2M1_GRID[torch.randint(0, 8, shape, generator=gen)]
        values = values * (torch.randint(0, 2, shape, generator=gen) * 2 - 1)
        values[..., ::16] = 6.0
        return nvfp4.quantize(values)

    assert k <= 2000
    xq, wq = grid_tensor(*lead, k), grid_tensor(n, k)
    return [t.to(DEVICE) for t in (xq.data, xq.scale, xq.global_scale, wq.data, wq.scale, wq.global_scale)]


QUANT_OUT_CASES = [
    # lead, n, k, activation, bias, gate shape, residual, out dtype: "none"/"relu" epilogues are the
    # reference's IEEE operations, so the fused operand equals the reference's bit for bit.
    ((1,), 32, 64, "relu", True, None, True, torch.bfloat16),
    ((7,), 48, 64, "none", True, (48,), False, torch.float32),
    ((2, 9), 64, 96, "gelu_tanh", True, None, True, torch.bfloat16),
    ((33,), 32, 160, "silu", False, None, False, torch.float16),
]
if ON_GPU:
    QUANT_OUT_CASES += [((4680,), 8960, 1536, "gelu_tanh", True, None, False, torch.bfloat16),
                        ((64,), 1536, 1536, "none", True, (1, 1536), True, torch.bfloat16)]
QUANT_OUT_PATHS = [(*case, path) for case in QUANT_OUT_CASES
                   for path in ("auto", "split3", "dense", "dense_pointer", "vector", "wgmma") if _takes(path, case[0], case[2])]


@pytest.mark.parametrize("lead,n,k,act,has_bias,gate_shape,has_res,dtype,path", QUANT_OUT_PATHS)
def test_gemm_writes_the_next_operand_bit_identical(lead, n, k, act, has_bias, gate_shape, has_res, dtype, path,
                                                    monkeypatch):
    """With a static ``next_amax`` the epilogue quantizes its rounded output: the bytes, scales and
    S_dec are those of quantizing the unfused output (and, where the epilogue is IEEE arithmetic
    only, of the reference backend's gemm_quantize_op). The amax is set below the output's so that
    saturation is exercised; two poisons show any byte left unwritten."""
    from nvfp4_compiler.backends.triton import dense_gemm

    if path == "dense_pointer":
        monkeypatch.setattr(dense_gemm, "has_tma", lambda device: False)
    force = FORCED[path]
    args = _exact_sum_operands(lead, n, k, seed=n + k)
    gen = torch.Generator().manual_seed(6)
    bias = torch.randn(n, generator=gen).to(DEVICE) if has_bias else None
    gate = torch.randn(gate_shape, generator=gen).to(DEVICE, dtype) if gate_shape else None
    res = torch.randn(*lead, n, generator=gen).to(DEVICE, dtype) if has_res else None
    epilogue = (bias, act, gate, res, dtype)
    unfused, _ = tgemm.gemm(*args, *epilogue, **force)
    next_amax = unfused.float().abs().amax() * 0.75
    m = unfused.numel() // n
    runs = []
    for poison in POISONS:
        out = (torch.full((m, n // 2), poison, dtype=torch.uint8, device=DEVICE),
               torch.full((m, n // 16), poison, dtype=torch.uint8, device=DEVICE))
        runs.append(tgemm.gemm(*args, *epilogue, next_amax=next_amax, out=out, **force))
    wants = [tquant.quantize(unfused, next_amax)]
    if act in ("none", "relu"):
        wants.append(reference.gemm_quantize_op(*args, *epilogue, next_amax.cpu()))
    for data, scale, s_dec in runs:
        assert data.shape == (*unfused.shape[:-1], n // 2) and scale.shape == (*unfused.shape[:-1], n // 16)
        for want_data, want_scale, want_s_dec in wants:
            assert torch.equal(data.cpu(), want_data.cpu())
            assert torch.equal(scale.view(torch.uint8).cpu(), want_scale.view(torch.uint8).cpu())
            assert torch.equal(s_dec.cpu(), want_s_dec.cpu())
    assert runs[0][2].data_ptr() % 16 == 0  # Inductor asserts 16-byte aligned outputs of the op


def test_gemm_next_operand_needs_n_a_multiple_of_16():
    args = _operands((4,), 40, 32)
    with pytest.raises(ValueError, match="next_amax.*multiple of 16.*N = 40"):
        tgemm.gemm(*args, None, "none", None, None, torch.bfloat16, next_amax=torch.tensor(1.0, device=DEVICE))


@pytest.mark.parametrize("programs", [1, 2])
def test_dense_tma_kernel_walks_every_tile_with_few_programs(programs, monkeypatch):
    """The persistent TMA kernel's programs stride over the output tiles: with fewer programs than
    tiles (3 x 3 of the fp32-output tile here, ragged in M and N) every element is still written
    correctly."""
    from nvfp4_compiler.backends.triton import dense_gemm

    monkeypatch.setattr(dense_gemm, "_num_sms", lambda device: programs)
    block_m, block_n = dense_gemm.TMA_TILE_FP32_OUT[:2]
    m, n, k = 2 * block_m + block_m // 2, 2 * block_n + block_n // 4, 48
    args = _operands((m,), n, k, seed=3)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    out = torch.full((m, n), float("nan"), device=DEVICE)
    got, amax = tgemm.gemm(*args, bias, "silu", None, None, torch.float32, dense=True, out=out)
    want, want_amax = reference.gemm_op(*args, bias, "silu", None, None, torch.float32)
    assert torch.isfinite(got).all()
    assert (got - want).norm() / want.norm() < 1e-5
    assert torch.allclose(amax, want_amax, rtol=1e-5)


def test_choose_tile_takes_a_smaller_tile_only_for_gemms_short_of_one_round(monkeypatch):
    """With fewer 128 x 256 tiles than SMs (Wan-5B text K/V, 512 x 3072: 48 for 132), the TMA kernel
    takes the smaller tile (with its own warps and stages) that fills more SMs; GEMMs with whole or
    nearly whole rounds of the main tile keep it, and BLOCK_K never changes."""
    from nvfp4_compiler.backends.triton import dense_gemm

    monkeypatch.setattr(dense_gemm, "TILE_SPEED", {(128, 256, 8, 3): 1.0, (128, 128, 4, 4): 0.8,
                                                    (64, 128, 4, 4): 0.55})
    choose = dense_gemm.choose_tile.__wrapped__  # not the cache: TILE_SPEED is patched
    main = (128, 256, 64, 8, 3)
    assert choose(512, 3072, main, 132) == (128, 128, 64, 4, 4)
    assert choose(512, 1536, main, 132) == (64, 128, 64, 4, 4)  # 24 tiles: 96 quarter tiles still fit
    for m, n in ((4680, 1536), (4680, 8960), (7040, 3072), (7040, 14336), (1536, 1536), (1024, 3072)):
        assert choose(m, n, main, 132) == main, (m, n)


def test_dense_tma_kernel_on_a_smaller_tile_equals_the_main_tile(monkeypatch):
    """A GEMM that choose_tile gives a smaller tile (ragged in M and N) writes every element
    (poisoned output) and the same bits as the main tile, on operands whose sums are exact in any
    order, with a gated, residual, GELU epilogue."""
    from nvfp4_compiler.backends.triton import dense_gemm

    m, n, k = (512, 1520, 1536) if ON_GPU else (20, 40, 64)
    if not ON_GPU:
        monkeypatch.setattr(dense_gemm, "_num_sms", lambda device: 8)  # 4 main tiles, 8 of the small one
    small = dense_gemm.choose_tile(m, n, dense_gemm.TMA_TILE, dense_gemm._num_sms(DEVICE))
    assert small != dense_gemm.TMA_TILE  # the case must exercise a smaller tile
    args = _exact_sum_operands((2, m // 2), n, k, seed=7)
    gen = torch.Generator().manual_seed(8)
    bias = torch.randn(n, generator=gen).to(DEVICE)
    gate = torch.randn(2, 1, n, generator=gen).to(DEVICE, torch.bfloat16)
    res = torch.randn(2, m // 2, n, generator=gen).to(DEVICE, torch.bfloat16)
    outs, launch = {}, dense_gemm.dense_tma_gemm
    for tile in (None, dense_gemm.TMA_TILE):
        monkeypatch.setattr(dense_gemm, "dense_tma_gemm", functools.partial(launch, tile=tile))
        out = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device=DEVICE)
        outs[tile] = tgemm.gemm(*args, bias, "gelu_tanh", gate, res, torch.bfloat16, dense=True, out=out)
    (got, amax), (main, main_amax) = outs[None], outs[dense_gemm.TMA_TILE]
    want, want_amax = reference.gemm_op(*args, bias, "gelu_tanh", gate, res, torch.bfloat16)
    assert torch.isfinite(got).all()
    assert torch.equal(got, main) and torch.equal(amax, main_amax)
    assert (got.float() - want.float()).norm() / want.float().norm() < 8e-3


def test_decode_of_both_operands_in_one_launch_equals_the_values_and_two_launches():
    """decode_to_f16 with the weight too (one launch, A's row tiles then W's) gives both operands'
    exact fp16 values (2^-7 x E2M1 x E4M3, K permuted evens then odds), identical to decoding
    each alone; ragged row counts on both sides; a K mismatch is refused."""
    from nvfp4_compiler.backends.triton import dense_gemm

    a_data, a_scale, _, w_data, w_scale, _ = _operands((37,), 21, 96, seed=5)
    a16, w16 = dense_gemm.decode_to_f16(a_data, a_scale, w_data=w_data, w_scale=w_scale)
    for data, scale, got in ((a_data, a_scale, a16), (w_data, w_scale, w16)):
        assert torch.equal(got, dense_gemm.decode_to_f16(data, scale))
        codes = nvfp4.format.unpack_nibbles(data.cpu())
        values = nvfp4.format.e2m1_decode(codes) * scale.cpu().float().repeat_interleave(16, dim=1) / 128
        want = torch.cat([values[:, 0::2], values[:, 1::2]], dim=1)
        assert torch.equal(got.cpu().float(), want)
    with pytest.raises(ValueError, match="w_data"):
        dense_gemm.decode_to_f16(a_data, a_scale, w_data=w_data[:, :16], w_scale=w_scale[:, :2])


def test_split_k_counts_tiles_as_the_autotuner_picks_them(monkeypatch):
    """choose_split_k counts one row tile for M <= 64 (the autotuner picks 64-row tiles at M = 64)
    and aims for 4 programs per SM with >= 256 K per split, on a 132-SM GPU: the Wan-1.3B FFN down
    GEMM splits 22 ways at M = 16 and 64 (the H100 sweep's best; 35 and 11 before), the FFN up 3
    ways (6 and 1 before); no split on the CPU interpreter or above M = 64."""
    monkeypatch.setattr(tgemm, "INTERPRET", False)
    monkeypatch.setattr(tgemm, "_num_sms", lambda device: 132)
    cases = {(16, 1536, 8960): 22, (64, 1536, 8960): 22, (16, 8960, 1536): 3, (64, 8960, 1536): 3,
             (16, 1536, 1536): 6, (65, 1536, 8960): 1}  # (m, n, kp)
    for (m, n, kp), want in cases.items():
        assert tgemm.choose_split_k(m, n, kp, DEVICE) == want, (m, n, kp)
    monkeypatch.setattr(tgemm, "INTERPRET", True)
    assert tgemm.choose_split_k(16, 1536, 8960, DEVICE) == 1


def test_wgmma_gemm_compiles_for_sm90_with_cp_async_and_asynchronous_mma():
    """Without a GPU: the Gluon kernel for M <= 64 (gemm_wgmma.py) compiles for sm_90 as launched (K's
    row strides specialized as multiples of 16, as every Wan GEMM's): A and W bytes in 16-byte
    cp.async copies (two each per thread and step), waited RING - 1 groups deep, the MMAs as
    asynchronous wgmma, the sums added by atomics, and no spills."""
    from sm90_compile import compile_for_sm90

    from nvfp4_compiler.backends.triton import gemm_wgmma as gw

    for a_rows in (16, 64):   # A rows decoded per step: up to 16 rows of A, or up to 64
        consts = dict(A_ROWS=a_rows, BLOCK_N=gw.BLOCK_N, BLOCK_K=gw.BLOCK_K, RING=gw.RING, num_warps=gw.NUM_WARPS)
        ptx, info = compile_for_sm90(f"{gw.__name__}:gemm_partials_wgmma_kernel", consts,
                                     {"num_warps": gw.NUM_WARPS}, {"sums_ptr": "*fp32"}, ("ROW_BYTES", "ROW_BLOCKS"))
        assert ptx.count("cp.async.cg.shared.global") >= 3 * gw.RING   # A's (1 or 2 per thread) and W's (2)
        assert f"cp.async.wait_group \t{gw.RING - 1};" in ptx
        assert "wgmma.mma_async" in ptx and "wgmma.commit_group" in ptx
        assert "global.gpu.relaxed.add.f32" in ptx   # red or atom: the partial sums into the workspace
        assert "STACK:0" in info and ".local" not in ptx, info


@pytest.mark.skipif(not ON_HOPPER, reason="runs the Gluon kernel: needs NVFP4_TEST_ON_GPU=1 on an sm_90 GPU "
                                           "(Gluon has no CPU interpreter)")
def test_wgmma_gemm_tunings_give_the_reference_bits(monkeypatch):
    """Every ring depth and both column tiles of the Gluon kernel, with K splits of one to several
    steps, for A of up to 16 rows (only those decoded) and of more: on operands whose GEMM is exact
    in any summation order, the output equals the reference backend's bit for bit."""
    from nvfp4_compiler.backends.triton import gemm_wgmma as gw

    for rows in (9, 37):   # A's first 16 rows decoded per step, or all 64
        args = _exact_sum_operands((rows,), 200, 1792, seed=rows)
        want, want_amax = reference.gemm_op(*args, None, "none", None, None, torch.float32)
        for ring in (2, gw.MAX_RING):
            for block_n in (64, 128):
                for split in (None, 1, 5):
                    monkeypatch.setattr(gw, "RING", ring)
                    monkeypatch.setattr(gw, "BLOCK_N", block_n)
                    got, amax = tgemm.gemm(*args, None, "none", None, None, torch.float32, wgmma=True, split_k=split)
                    assert torch.equal(got.cpu(), want.cpu()), (rows, ring, block_n, split)
                    assert torch.equal(amax.cpu(), want_amax.cpu()), (rows, ring, block_n, split)


def test_wgmma_gemm_grid_covers_every_k_step_once():
    """The Gluon GEMM's launch: for every Wan GEMM shape and asked-for split, its splits cover the K
    steps exactly once and none is empty (an empty split would still add its zeros, but waste a
    program); the default split keeps two steps per split and fills the SMs (132, H100)."""
    from nvfp4_compiler.backends.triton import gemm_wgmma as gw

    for kp, n in ((1536, 1536), (1536, 8960), (8960, 1536), (3072, 3072), (3072, 14336), (14336, 3072), (256, 40)):
        steps = -(-kp // gw.BLOCK_K)
        for block_n in (64, 128):
            default = gw.choose_split(n, kp, 132, block_n, gw.RING)
            tiles = -(-n // block_n)
            assert steps // default >= 2 or default == 1                     # two steps per split at least
            assert tiles * default >= gw.resident_per_sm(block_n, gw.RING) * 132 or default == max(1, steps // 2)
            for split in (1, 2, 3, 7, default, 1000):
                (grid_tiles, splits), per_split = gw.launch_grid(n, kp, split, block_n)
                runs = [range(s * per_split, min((s + 1) * per_split, steps)) for s in range(splits)]
                assert grid_tiles == tiles
                assert all(len(r) > 0 for r in runs) and sorted(i for r in runs for i in r) == list(range(steps))
                assert splits <= split


def test_wgmma_gemm_rejects_what_it_cannot_take():
    from nvfp4_compiler.backends.triton import gemm_wgmma as gw

    a = torch.zeros(4, 128, dtype=torch.uint8)
    with pytest.raises(ValueError, match="ring: expected 2 to"):
        gw.gemm_partials_wgmma(a, None, None, None, None, ring=gw.MAX_RING + 1)
    with pytest.raises(ValueError, match="block_n: expected 64 or 128"):
        gw.gemm_partials_wgmma(a, None, None, None, None, block_n=96)
    with pytest.raises(ValueError, match="a: expected 1 to 64 rows of K a multiple of 256 on an sm_90 GPU"):
        gw.gemm_partials_wgmma(a, None, None, None, None)   # a CPU tensor


@pytest.mark.parametrize("path", ["vector", "tile"] + (["wgmma"] if ON_HOPPER else []))
def test_split_k_leaves_the_persistent_workspace_zeroed_between_calls(path):
    """The GEMV's and the tile kernel's partial sums, tickets and tile maxima live in a workspace
    reused by every call on a stream; each call must zero what it used. Calls of different shapes
    and splits back to back all match the reference (amax included), and the workspace is all
    zeros after each. The tile cases take both forms: one launch (M <= 16) and the second,
    epilogue kernel (M = 33); the Gluon kernel (Hopper) always takes the second."""
    from nvfp4_compiler.backends.triton import split_k as tsplit

    cases = {"vector": [((1,), 48, 160, 5), ((1,), 40, 64, 1), ((1,), 48, 160, 3), ((1,), 200, 96, 2)],
             "tile": [((5,), 48, 160, 5), ((2, 9), 40, 64, 1), ((33,), 48, 160, 3), ((3,), 200, 96, 2)],
             "wgmma": [((5,), 48, 512, 3), ((2, 9), 40, 256, 1), ((64,), 200, 768, None), ((1,), 64, 256, 2)]}[path]
    for lead, n, k, split in cases:
        args = _operands(lead, n, k, seed=n + k)
        got, amax = tgemm.gemm(*args, None, "none", None, None, torch.float32, vector=path == "vector",
                               wgmma=path == "wgmma", split_k=split)
        want, want_amax = reference.gemm_op(*args, None, "none", None, None, torch.float32)
        assert (got - want).norm() / want.norm() < 1e-5
        assert torch.allclose(amax, want_amax, rtol=1e-5)
        (work,) = [w for (device, _, owner), w in tsplit._WORKSPACES.items()
                   if device == got.device and owner == "split_k"]
        assert torch.count_nonzero(work) == 0, (lead, n, k, split)


def test_compiled_tiny_model_on_triton_equals_reference_backend():
    from nvfp4_compiler.models import build_model, example_inputs

    model = build_model("tiny", device=DEVICE).eval()
    inputs = example_inputs(model.cfg, device=DEVICE)
    with torch.no_grad():
        on_triton = nvfp4.compile(model, backend="triton")
        out_triton = on_triton(*inputs)
        torch._dynamo.reset()
        out_ref = nvfp4.compile(model, backend="reference")(*inputs)
    assert {g.backend for g in on_triton.report().quantized} == {"triton"}
    assert (out_triton - out_ref).norm() / out_ref.norm() < 1e-5


def test_compiled_tiny_model_with_static_scales_on_triton_equals_reference_backend():
    """Static scales: the FFN's up GEMM writes the down GEMM's operand in its epilogue on both
    backends; an uncalibrated model is refused before any kernel runs."""
    from nvfp4_compiler.models import build_model, example_inputs

    model = build_model("tiny", device=DEVICE).eval()
    inputs = example_inputs(model.cfg, device=DEVICE)
    outputs = {}
    with torch.no_grad():
        for backend in ("triton", "reference"):
            torch._dynamo.reset()
            compiled = nvfp4.compile(model, backend=backend, activation_scales="static")
            with pytest.raises(ValueError, match="never calibrated"):
                compiled(*inputs)
            nvfp4.calibrate(compiled, [inputs], progress=False)
            outputs[backend] = compiled(*inputs)
            fused = [g for g in compiled.report().quantized if "NVFP4 output (static scale)" in g.epilogue]
            assert fused and {g.backend for g in fused} == {backend}
    assert (outputs["triton"] - outputs["reference"]).norm() / outputs["reference"].norm() < 1e-5
