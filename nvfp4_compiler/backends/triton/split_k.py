"""Split-K in one launch, shared by the tile kernel (gemm.py) and the GEMV (gemv.py).

At memory-bound shapes (M <= 64) a GEMM takes a few microseconds, and each extra launch in a
CUDA graph (a memset of the partial sums, a memset of the amax, a second kernel for the epilogue)
costs about as much as moving a megabyte. So no call needs a memset, and most need one kernel:

- partial sums are added by atomics into a persistent workspace; the last program of an output
  tile (an atomic ticket) takes the full sums, zeroing them and its ticket, and runs the epilogue
  (or, where that is slower, gemm.py's second kernel takes the sums of every tile);
- every tile's epilogue puts its max |out| in a slot; the last tile (a second ticket) reduces the
  slots into the call's amax and zeroes them.

The workspace is all zeros between calls: every call zeroes what it used before it ends. There is
one per device and stream, since calls on one stream run in order and can share it.

Ordering: the partial sums are relaxed atomics; a barrier puts them before the one thread's
acq_rel atomic on the ticket (release is cumulative), so the program that takes the last ticket
sees them (``take_sums`` reads them from L2).
"""

import torch
import triton
import triton.language as tl

#: Tile maxima reduced per step by the last tile (any number of tiles, in steps of this many).
SLOTS_PER_STEP = tl.constexpr(1024)

_WORKSPACES: dict = {}


def persistent_workspace(device: torch.device, floats: int, owner: str = "split_k") -> torch.Tensor:
    """The zeroed fp32 workspace of at least ``floats`` elements for this device, stream and
    ``owner`` (int32 tickets share it: int32 zero is fp32 zero). Grown, never shrunk."""
    stream = torch.cuda.current_stream(device).stream_id if device.type == "cuda" else 0
    key = (device, stream, owner)
    work = _WORKSPACES.get(key)
    if work is None or work.numel() < floats:
        work = torch.zeros(max(floats, 1 << 16), dtype=torch.float32, device=device)
        _WORKSPACES[key] = work
    return work


def workspace_floats(sums: int, tiles: int) -> int:
    """Workspace a call needs: partial sums, then one max slot per tile, then tickets (one per tile
    and one for the amax); the layout ``tile_slots`` reads."""
    return sums + 2 * tiles + 1


@triton.jit
def tile_slots(work_ptr, sums, tiles):
    """(partial sums [sums], tile max slots [tiles], int32 tickets [tiles + 1]) in the workspace."""
    tile_max_ptr = work_ptr + sums
    return work_ptr, tile_max_ptr, (tile_max_ptr + tiles).to(tl.pointer_type(tl.int32))


@triton.jit
def take_sums(ptrs, mask):
    """The fp32 values at ``ptrs`` (0 where masked), leaving zeros there. A barrier separates the load
    from the zeros' store: Triton may give the two different layouts, so without it one thread can
    zero an element that another has still to load (on the H100 such outputs came out 0.0)."""
    values = tl.load(ptrs, mask=mask, other=0.0, cache_modifier=".cg")  # from L2, where the atomics were performed
    tl.debug_barrier()
    tl.store(ptrs, tl.zeros_like(values), mask=mask)
    return values


@triton.jit
def add_partial_sums(acc, sums_ptr, offs, mask, ticket_ptr, splits):
    """Add this program's partial sums ``acc`` to the tile's; returns (is this the tile's last
    split, and then the tile's full sums, the workspace and ticket zeroed again)."""
    tl.atomic_add(sums_ptr + offs, acc, mask=mask, sem="relaxed")
    tl.debug_barrier()  # every thread's sums are in before one thread takes the ticket
    last = tl.atomic_add(ticket_ptr, 1) == splits - 1  # acq_rel: publishes them to the last program
    if last:
        acc = take_sums(sums_ptr + offs, mask)
        tl.store(ticket_ptr, 0)
    return last, acc


@triton.jit
def reduce_tile_maxima(amax_ptr, tile_max_ptr, ticket_ptr, tiles):
    """After a tile's epilogue put its max in its slot (an acq_rel atomic max): the last of
    ``tiles`` tiles writes the max over all slots to ``amax_ptr`` and zeroes them and the ticket."""
    tl.debug_barrier()
    if tl.atomic_add(ticket_ptr, 1) == tiles - 1:
        amax = 0.0
        for first in range(0, tiles, SLOTS_PER_STEP):
            slots = first + tl.arange(0, SLOTS_PER_STEP)
            amax = tl.maximum(amax, tl.max(take_sums(tile_max_ptr + slots, slots < tiles), axis=0))
        tl.store(amax_ptr, amax)
        tl.store(ticket_ptr, 0)
