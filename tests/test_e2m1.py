"""E2M1 element rounding, encoding and packing against the spec's table and ml_dtypes."""

import ml_dtypes
import numpy as np
import pytest
import torch

from nvfp4_compiler.format.e2m1 import (
    E2M1_MAGNITUDES,
    e2m1_decode,
    e2m1_encode,
    e2m1_encode_stochastic,
    pack_nibbles,
    unpack_nibbles,
)

# (input, expected code) for every row of the spec's rounding table, its tie points and its
# neighbours on both sides. Ties go to the even code: 0.25->0, 0.75->1.0, 1.25->1.0,
# 1.75->2.0, 2.5->2.0, 3.5->4.0, 5.0->4.0.
ROUNDING_TABLE = [
    (0.0, 0), (0.1, 0), (0.25, 0), (0.2500001, 1),
    (0.5, 1), (0.7499999, 1), (0.75, 2),
    (1.0, 2), (1.25, 2), (1.2500001, 3),
    (1.5, 3), (1.7499999, 3), (1.75, 4),
    (2.0, 4), (2.5, 4), (2.5000002, 5),
    (3.0, 5), (3.4999998, 5), (3.5, 6),
    (4.0, 6), (5.0, 6), (5.0000005, 7),
    (6.0, 7), (6.5, 7), (1e30, 7), (float("inf"), 7),
]


@pytest.mark.parametrize("value,code", ROUNDING_TABLE)
def test_rounding_table_positive(value, code):
    assert int(e2m1_encode(torch.tensor([value]))[0]) == code


@pytest.mark.parametrize("value,code", ROUNDING_TABLE)
def test_rounding_table_negative_sets_sign_bit(value, code):
    assert int(e2m1_encode(torch.tensor([-value]))[0]) == code | 0x8


def test_negative_zero_and_tiny_negatives_encode_as_minus_zero():
    codes = e2m1_encode(torch.tensor([-0.0, -1e-30, -0.25, 0.0]))
    assert codes.tolist() == [8, 8, 8, 0]


def test_decode_table():
    codes = torch.arange(16, dtype=torch.uint8)
    expected = list(E2M1_MAGNITUDES) + [-m for m in E2M1_MAGNITUDES]
    assert e2m1_decode(codes).tolist() == expected
    assert torch.signbit(e2m1_decode(torch.tensor([8], dtype=torch.uint8))).item()


def test_encode_matches_ml_dtypes_on_dense_grid():
    grid = np.linspace(-7.0, 7.0, 56001, dtype=np.float32)
    ties = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0], dtype=np.float32)
    values = np.concatenate([grid, ties, -ties, np.nextafter(ties, 0), np.nextafter(ties, 10)])
    ours = e2m1_encode(torch.from_numpy(values)).numpy()
    theirs = values.astype(ml_dtypes.float4_e2m1fn).view(np.uint8) & 0x0F
    np.testing.assert_array_equal(ours, theirs)


def test_pack_puts_even_element_in_low_nibble():
    codes = torch.tensor([1, 2, 3, 15], dtype=torch.uint8)
    assert pack_nibbles(codes).tolist() == [0x21, 0xF3]


def test_pack_unpack_roundtrip():
    codes = torch.randint(0, 16, (3, 5, 32), dtype=torch.uint8)
    assert torch.equal(unpack_nibbles(pack_nibbles(codes)), codes)


def test_pack_rejects_odd_length():
    with pytest.raises(ValueError, match="codes"):
        pack_nibbles(torch.zeros(3, dtype=torch.uint8))


def test_stochastic_rounding_lands_on_neighbours_only():
    x = torch.tensor([2.4] * 1000)
    codes = e2m1_encode_stochastic(x, torch.rand(1000, generator=torch.Generator().manual_seed(0)))
    assert set(codes.tolist()) == {4, 5}  # 2.0 and 3.0
    # P(up) = (2.4 - 2) / (3 - 2) = 0.4
    assert abs((codes == 5).float().mean().item() - 0.4) < 0.05


def test_stochastic_rounding_exact_grid_values_never_move():
    x = torch.tensor(list(E2M1_MAGNITUDES) * 100)
    codes = e2m1_encode_stochastic(x, torch.rand(x.shape))
    assert torch.equal(e2m1_decode(codes), x)
