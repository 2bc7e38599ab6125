"""PagedNVFP4Cache: layout, allocator invariants under random operations, sink and window
policies, atomic failure, and attention that reads the NVFP4 pages directly."""

import copy
import random

import pytest
import torch
import torch.nn.functional as F

import nvfp4_compiler as nvfp4
from nvfp4_compiler.kv_cache import CacheFullError, PagedNVFP4Cache
from nvfp4_compiler.paged_attention import paged_attention

H, D, S = 2, 32, 4  # heads, head_dim, page size


def _kv(tokens, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, H, D, generator=gen), torch.randn(tokens, H, D, generator=gen)


def _snapshot(cache):
    return (copy.deepcopy(cache._seqs), list(cache._free), cache.k_data.clone(), cache.v_scale.view(torch.uint8).clone())


def test_layout_shapes_and_values_are_the_format_per_head():
    cache = PagedNVFP4Cache(8, S, H, D)
    cache.add_sequence(0)
    k, v = _kv(6)
    cache.append(0, k, v)
    assert cache.k_data.shape == (8, S, H, D // 2) and cache.k_scale.shape == (8, S, H, D // 16)
    assert cache.k_global.shape == (8, H) and cache.block_table().tolist() == [[0, 1]]
    got_k, got_v = cache.gather(0)
    for h in range(H):  # one FP32 scale per head for the whole chunk, 1x16 blocks along head_dim
        assert torch.equal(got_k[:, h], nvfp4.quantize(k[:, h]).dequantize())
        assert torch.equal(got_v[:, h], nvfp4.quantize(v[:, h]).dequantize())


def test_appends_never_requantize_what_is_stored():
    cache = PagedNVFP4Cache(8, S, H, D)
    cache.add_sequence(0)
    k1, v1 = _kv(5, 1)
    cache.append(0, k1, v1)
    before = cache.gather(0)[0].clone()
    cache.append(0, *(t * 100 for t in _kv(3, 2)))  # a much larger chunk: its own scale
    assert torch.equal(cache.gather(0)[0][:5], before)
    assert cache.length(0) == 8 and [len(cache.block_table()[0])] == [3]  # 5 tokens -> 2 pages, 3 -> 1


def test_memory_is_at_least_3_5x_smaller_than_bf16():
    heads, head_dim, page = 12, 128, 16  # Wan-1.3B attention
    cache = PagedNVFP4Cache(64, page, heads, head_dim)
    bf16_bytes = 2 * 64 * page * heads * head_dim * 2  # K and V
    assert bf16_bytes / cache.nbytes() >= 3.5


def test_sink_is_never_evicted_and_window_is_bounded():
    cache = PagedNVFP4Cache(16, S, H, D, window_tokens=8)
    cache.add_sequence(0)
    cache.append(0, *_kv(6), sink=True)
    sink_pages = cache.block_table()[0, :2].tolist()
    for step in range(10):
        cache.append(0, *_kv(4, step))
        state = cache._get(0)
        assert state.pages[:2] == sink_pages
        assert sum(state.fill[2:]) <= 8
        cache.check_invariants()
    assert cache.start_position(0) == 9 * 4 - 4  # 32 window tokens evicted after 10 appends of 4


def test_rewrite_recaches_a_page_aligned_range_in_place():
    cache = PagedNVFP4Cache(8, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(12))
    pages = cache.block_table()[0].tolist()
    k2, v2 = _kv(8, 9)
    cache.rewrite(0, 4, k2, v2)
    assert cache.block_table()[0].tolist() == pages
    k, _ = cache.gather(0)
    assert torch.equal(k[4:12, 0], nvfp4.quantize(k2[:, 0]).dequantize())
    assert torch.equal(k[:4, 0], nvfp4.quantize(_kv(12)[0][:, 0]).dequantize()[:4])
    with pytest.raises(ValueError, match="begin a page"):
        cache.rewrite(0, 3, *_kv(4))


def test_running_out_of_pages_raises_and_changes_nothing():
    cache = PagedNVFP4Cache(3, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(8))
    snap = _snapshot(cache)
    with pytest.raises(CacheFullError, match="2 pages needed"):
        cache.append(0, *_kv(5))
    after = _snapshot(cache)
    assert snap[0].keys() == after[0].keys() and snap[1] == after[1]
    assert torch.equal(snap[2], after[2]) and torch.equal(snap[3], after[3])


def _fresh_page_tables(cache, seqs):
    """page_tables built from the sequences' state now, nothing kept."""
    table = torch.full((len(seqs), max(len(cache._get(q).pages) for q in seqs)), -1, dtype=torch.int32)
    fills = torch.zeros_like(table)
    for row, seq in enumerate(seqs):
        state = cache._get(seq)
        table[row, : len(state.pages)] = torch.tensor(state.pages, dtype=torch.int32)
        fills[row, : len(state.fill)] = torch.tensor(state.fill, dtype=torch.int32)
    return table, fills, torch.tensor([len(cache._get(q).pages) for q in seqs], dtype=torch.int32)


def test_page_tables_are_built_once_until_pages_change():
    """An attention call reuses the device tables of an unchanged cache (no rebuild, no copy);
    re-writing stored tokens keeps them, appending or truncating replaces them."""
    cache = PagedNVFP4Cache(10, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(2 * S), sink=True)
    first = cache.page_tables([0])
    assert all(a is b for a, b in zip(first, cache.page_tables([0])))
    cache.rewrite(0, 0, *_kv(S, 1))
    assert all(a is b for a, b in zip(first, cache.page_tables([0])))
    cache.append(0, *_kv(3))
    grown = cache.page_tables([0])
    assert grown[2].tolist() == [3] and grown[1][0].tolist() == [S, S, 3]
    cache.truncate(0, 2 * S)
    assert cache.page_tables([0])[2].tolist() == [2]


def test_random_operations_leave_no_leaked_or_double_owned_page():
    rng = random.Random(0)
    cache = PagedNVFP4Cache(40, S, H, D, window_tokens=12)
    sinks: dict[int, list[int]] = {}
    next_id, full = 0, 0
    for step in range(3000):
        op = rng.random()
        seqs = cache.sequences()
        try:
            if op < 0.15 or not seqs:
                seq, next_id = next_id, next_id + 1
                cache.add_sequence(seq)
                try:
                    cache.append(seq, *_kv(rng.randint(1, 8), step), sink=True)
                except CacheFullError:
                    cache.free_sequence(seq)
                    raise
                sinks[seq] = list(cache._get(seq).pages)
            elif op < 0.75:
                cache.append(rng.choice(seqs), *_kv(rng.randint(1, 10), step))
            elif op < 0.85:
                seq = rng.choice(seqs)
                state = cache._get(seq)
                first = rng.randrange(len(state.pages))
                start = sum(state.fill[:first])
                cache.rewrite(seq, start, *_kv(state.fill[first], step))
            else:
                seq = rng.choice(seqs)
                cache.free_sequence(seq)
                sinks.pop(seq)
        except CacheFullError:
            full += 1
        cache.check_invariants()
        for seq, pages in sinks.items():
            assert cache._get(seq).pages[: len(pages)] == pages
        if cache.sequences():  # the page tables kept between calls follow every change
            seqs = cache.sequences()
            for got, want in zip(cache.page_tables(seqs), _fresh_page_tables(cache, seqs)):
                assert torch.equal(got, want), step
    assert full > 0  # the test did reach the out-of-pages path
    for seq in cache.sequences():
        cache.free_sequence(seq)
    assert cache.free_pages == cache.num_pages


@pytest.mark.parametrize("with_new", [False, True])
def test_paged_attention_equals_sdpa_over_the_dequantized_cache(with_new):
    cache = PagedNVFP4Cache(32, S, H, D, window_tokens=16)
    q = torch.randn(2, 5, H, D)
    k_new, v_new = (torch.randn(2, 3, H, D), torch.randn(2, 3, H, D)) if with_new else (None, None)
    for seq in (0, 1):
        cache.add_sequence(seq)
        cache.append(seq, *_kv(6, seq), sink=True)
        for chunk in range(4):
            cache.append(seq, *_kv(5, 10 * seq + chunk))
    out = paged_attention(q, cache, [0, 1], k_new, v_new)
    for row, seq in enumerate((0, 1)):
        k, v = cache.gather(seq)
        if with_new:
            k, v = torch.cat([k, k_new[row]]), torch.cat([v, v_new[row]])
        ref = F.scaled_dot_product_attention(q[row].transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        assert torch.allclose(out[row], ref.transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="head_dim"):
        PagedNVFP4Cache(4, S, H, 20)
    cache = PagedNVFP4Cache(4, S, H, D)
    cache.add_sequence(0)
    with pytest.raises(ValueError, match="k, v"):
        cache.append(0, torch.randn(3, H, D + 16), torch.randn(3, H, D + 16))
    with pytest.raises(KeyError, match="seq"):
        cache.append(7, *_kv(2))
    cache.append(0, *_kv(2))
    with pytest.raises(ValueError, match="sink"):
        cache.append(0, *_kv(2), sink=True)


def test_truncate_and_grow():
    cache = PagedNVFP4Cache(4, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(6, 1))          # pages of 4 + 2
    cache.append(0, *_kv(3, 2))          # a fresh page
    k_before, _ = cache.gather(0)
    with pytest.raises(ValueError, match="tokens"):
        cache.truncate(0, 5)             # not a page end: nothing changes
    assert cache.length(0) == 9
    cache.truncate(0, 6)
    assert cache.length(0) == 6 and cache.free_pages == 2
    assert torch.equal(cache.gather(0)[0], k_before[:6])
    cache.grow(3)
    assert cache.num_pages == 7 and cache.free_pages == 5
    assert torch.equal(cache.gather(0)[0], k_before[:6])  # stored pages untouched
    cache.append(0, *_kv(20, 3))
    cache.check_invariants()


def test_used_bytes_count_held_pages_only():
    cache = PagedNVFP4Cache(8, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(6))                       # 2 of 8 pages
    assert cache.nbytes(used_only=True) * 4 == cache.nbytes()
    big = PagedNVFP4Cache(8, 64, H, D)            # per-page FP32 scales weigh little on 64-token pages
    per_token_bf16 = 2 * 2 * H * D                 # K and V, bf16
    assert 8 * 64 * per_token_bf16 / big.nbytes() >= 3.5


def test_drop_frees_a_page_range_after_the_sink_and_moves_the_rest_up():
    cache = PagedNVFP4Cache(8, S, H, D)
    cache.add_sequence(0)
    cache.append(0, *_kv(4, 1), sink=True)   # the sink: one page
    cache.append(0, *_kv(6, 2))               # pages of 4 + 2
    cache.append(0, *_kv(3, 3))               # one page
    k_before, _ = cache.gather(0)
    table_before = cache.page_tables([0])[0].clone()
    before = _snapshot(cache)
    for start, tokens, match in ((0, 4, "sink"), (4, 5, "page boundaries"), (5, 4, "page boundaries")):
        with pytest.raises(ValueError, match=match):
            cache.drop(0, start, tokens)
        after = _snapshot(cache)             # nothing changed
        assert after[0] == before[0] and after[1] == before[1]
    cache.drop(0, 4, 6)
    assert cache.length(0) == 7 and cache.free_pages == 8 - 2
    assert torch.equal(cache.gather(0)[0], torch.cat([k_before[:4], k_before[10:]]))
    assert not torch.equal(cache.page_tables([0])[0], table_before)  # the kept tables were dropped
    cache.check_invariants()
