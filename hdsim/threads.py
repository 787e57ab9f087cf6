"""torch thread count for a block of work.

On a small machine shared with other jobs (or with onnxruntime's own pool), a
second OpenMP thread spinning against the first slows tiny tensor ops by 10x or
more; the decoders, the training and several tests run with one thread.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads, then restore the previous count.

    Example:
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
