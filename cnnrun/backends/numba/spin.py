"""Waiting for another thread without sleeping: :func:`wait_for` polls a word of memory with the
processor's ``pause`` between polls, for a bounded number of polls, with the GIL released.

Why: a thread that sleeps on a lock is woken by the kernel, and on a virtual machine whose
other core has gone idle that took 50-100 us a hand-over; LeNet at batch 64 hands over 18 times
a step (9 kernels, there and back), and its step ran at 0.65x the speed it had when Numba's
OpenMP threads, which poll the same way, ran the kernels. The polls are bounded (a few hundred
microseconds), so an idle run sleeps as before.

**The GIL is a sleeping lock too.** A thread that returns from native code to Python while the
other thread holds the GIL sleeps on it, and is woken (50 us here) when the GIL is dropped. A
hand-over has two such moments, and :func:`handover` takes both out of the way (the round trip
of a kernel that takes 10 us on each of two threads, 60 -> 21 us; LeNet at batch 64 runs about
19 kernels a step). It says the worker's last range is done from native code, after the GIL
is released, so that the caller, which sees it, finds the GIL free; and once the next ticket is
seen it polls ``settle`` times more (about 6 us) before it returns to Python, while the caller
dispatches its own range and releases the GIL in native code. A settle too short for a slow
caller sleeps on the GIL as before: slower, never wrong.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _pause(typingctx):
    """x86 ``pause`` (a hint that this is a polling loop), then a fence: memory is read again
    after it, so the poll sees the other thread's write."""

    def codegen(context, builder, signature, args):
        pause = builder.module.declare_intrinsic(
            "llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), [])
        )
        builder.call(pause, [])
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, cache=True)
def wait_for(flags, index, value, polls):
    """True once ``flags[index] == value``; False if it is not after ``polls`` polls."""
    for _ in range(polls):
        if flags[index] == value:
            return True
        _pause()
    return flags[index] == value


@njit(nogil=True, cache=True)
def handover(flags, mark, mark_value, index, value, polls, settle):
    """``flags[mark] = mark_value``, then :func:`wait_for` ``flags[index] == value``, then
    ``settle`` polls more once it holds (see the module's notes)."""
    flags[mark] = mark_value
    _pause()  # the fence: the mark is seen before any poll
    if not wait_for(flags, index, value, polls):
        return False
    for _ in range(settle):
        _pause()
    return True
