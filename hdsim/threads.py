"""torch thread count for a block of work.

On a small machine shared with other jobs (or with onnxruntime's own pool), a
second OpenMP thread spinning against the first slows tiny tensor ops by 10x or
more; the decoders, the training and several tests run with one thread.
"""

from __future__ import annotations

import contextlib

__all__ = ["torch_threads", "set_torch_threads"]


def set_torch_threads(n: int | None) -> None:
    """Apply a ``--threads`` option: ``n`` torch threads; ``None`` or 0 keeps torch's default.

    Raises:
        HdsimError: ``n`` not an integer in ``[0, THREADS_MAX]``.
    """
    from hdsim.validation import check_threads

    check_threads("threads", n, minimum=0, optional=True)
    if n:
        import torch  # here, not at import: the torch-free commands (hdsim run) import this module too

        torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (``None`` or 0: unchanged), then restore the previous count.

    Example:
        >>> import torch
        >>> with torch_threads(1):
        ...     torch.get_num_threads()
        1
    """
    import torch

    before = torch.get_num_threads()
    set_torch_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
