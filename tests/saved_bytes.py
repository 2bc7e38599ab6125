"""What autograd keeps between forward and backward, measured on any device (saved-tensor hooks)."""

import torch


def saved_activation_bytes(fn, inputs, params) -> int:
    """Bytes autograd keeps for backward of ``fn(*inputs).square().mean()`` (one count per storage,
    storages of ``params`` excluded: those are weights, not activations); runs the backward too."""
    storages = {}
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn(*inputs).square().mean()
    loss.backward()
    return sum(storages.values())
