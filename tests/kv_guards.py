"""A check shared by the attention tests: scale arrays with NaN just before them."""

import torch


def nan_guarded_scales(cache):
    """``cache.k_global`` and ``v_global`` as views one row into arrays whose first row is NaN: a
    kernel that reads the scales of page -1 (the block table's "no page" entry) turns its output
    to NaN."""
    guarded = []
    for glob in (cache.k_global, cache.v_global):
        big = torch.full((glob.shape[0] + 1, glob.shape[1]), float("nan"), device=glob.device)
        big[1:] = glob
        guarded.append(big[1:])
    return guarded
