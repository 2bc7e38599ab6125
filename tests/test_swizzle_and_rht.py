"""The 128x4 swizzled scale layout and the 16-point random Hadamard transform."""

import pytest
import torch

import nvfp4_compiler as nvfp4
from nvfp4_compiler.format import from_swizzled, inverse_rht, rht, rht_matrix, to_swizzled
from nvfp4_compiler.format.hadamard import RHT_SIGNS, sylvester_hadamard


def _scales_encoding_position(rows, cols):
    """E4M3 bytes whose value tells (r, c): distinct small codes, never zero."""
    codes = (torch.arange(rows * cols) % 120 + 1).to(torch.uint8).view(rows, cols)
    return codes.view(torch.float8_e4m3fn)


def test_swizzled_entry_sits_where_the_spec_says():
    rows, cols = 256, 8
    plain = _scales_encoding_position(rows, cols)
    flat = to_swizzled(plain).view(torch.uint8)
    raw = plain.view(torch.uint8)
    tiles_per_row_band = cols // 4
    for r in [0, 1, 31, 32, 33, 100, 127, 128, 200, 255]:
        for c in range(cols):
            tile = (r // 128) * tiles_per_row_band + c // 4
            rr, cc = r % 128, c % 4
            offset = tile * 512 + (rr % 32) * 16 + (rr // 32) * 4 + cc
            assert flat[offset] == raw[r, c], (r, c)


def test_swizzle_equals_the_five_dim_view():
    plain = _scales_encoding_position(128, 4)
    view = to_swizzled(plain).view(torch.uint8).view(1, 1, 32, 4, 4)
    raw = plain.view(torch.uint8)
    assert view[0, 0, 5, 2, 3] == raw[2 * 32 + 5, 3]


@pytest.mark.parametrize("rows,cols", [(1, 1), (100, 3), (128, 4), (300, 9)])
def test_swizzle_roundtrip_with_padding(rows, cols):
    plain = _scales_encoding_position(rows, cols)
    flat = to_swizzled(plain)
    assert flat.numel() == ((rows + 127) // 128 * 128) * ((cols + 3) // 4 * 4)
    assert torch.equal(from_swizzled(flat, rows, cols).view(torch.uint8), plain.view(torch.uint8))


def test_nvfp4_tensor_swizzled_roundtrip():
    q = nvfp4.quantize(torch.randn(2, 100, 80))
    back = nvfp4.NVFP4Tensor.from_swizzled(q.data, q.swizzled_scale(), q.global_scale, q.shape)
    assert torch.equal(back.dequantize(), q.dequantize())


def test_from_swizzled_rejects_wrong_size():
    with pytest.raises(ValueError, match="swizzled"):
        from_swizzled(torch.zeros(10, dtype=torch.float8_e4m3fn), 128, 4)


def test_rht_matrix_is_the_recipe_and_orthogonal():
    h = sylvester_hadamard(16)
    assert torch.equal(h @ h.T, 16 * torch.eye(16))
    m = rht_matrix()
    assert torch.allclose(m, torch.diag(torch.tensor(RHT_SIGNS, dtype=torch.float32)) @ h / 4)
    assert torch.allclose(m @ m.T, torch.eye(16), atol=1e-6)


def test_rht_is_the_spec_formula_and_invertible():
    x = torch.randn(4, 3, 64)
    # fp32 results differ from an fp64 matmul by the butterfly's own rounding only.
    expected = (x.double().view(-1, 16) @ rht_matrix().double()).view(x.shape)
    assert torch.allclose(rht(x).double(), expected, rtol=0, atol=2e-6)
    assert torch.allclose(inverse_rht(rht(x)), x, atol=1e-5)


def test_rht_cancels_in_a_product_along_k():
    a, b = torch.randn(8, 64, dtype=torch.float64), torch.randn(5, 64, dtype=torch.float64)
    assert torch.allclose(rht(a) @ rht(b).T, (a @ b.T).float(), rtol=1e-4, atol=1e-4)


def test_quantize_with_rht_dequantizes_back_to_the_input_domain():
    x = torch.randn(16, 64)
    q = nvfp4.quantize(x, rht=True)
    assert q.rht
    # The values stored are those of quantize(rht(x)); dequantize() undoes the transform.
    plain_of_transformed = nvfp4.quantize(rht(x))
    assert torch.equal(q.data, plain_of_transformed.data)
    transformed = q.dequantize(undo_rht=False)
    assert torch.equal(transformed, plain_of_transformed.dequantize())
    assert torch.allclose(q.dequantize(), inverse_rht(transformed), atol=1e-6)
    # The transform is orthogonal: each 16-group's error norm is the same in both domains.
    err_x = (q.dequantize() - x).view(-1, 16).norm(dim=1)
    err_t = (transformed - rht(x)).view(-1, 16).norm(dim=1)
    assert torch.allclose(err_x, err_t, rtol=1e-4, atol=1e-6)


def test_rht_rejects_bad_width():
    with pytest.raises(ValueError, match="multiple of 16"):
        rht(torch.randn(3, 20))
