"""Keep glibc's malloc from handing freed tensor memory back to the OS after every update.

PyTorch's CPU tensors come from plain ``malloc``. glibc serves a block above its *mmap threshold* with a
fresh ``mmap`` and returns it on ``free``, and it trims the top of the heap back to the OS whenever more
than its *trim threshold* is free there. A training update allocates and frees the same few hundred
activation and gradient tensors (hundreds of kB each at the CPU preset) every time, so the pages come back
as fresh, zero-filled pages on first touch: measured on the CPU preset, 1 torch thread, 4 400-5 900 minor
page faults per update, and the element-wise kernels that first write those outputs paid for them.

``tune()`` sets both thresholds with ``mallopt`` (the documented glibc knobs, ``mallopt(3)``; the same as
the environment variables ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``): blocks up to 32 MiB
(glibc's largest mmap threshold) come from the heap, and the heap is trimmed only above 1 GiB free. Freed
memory then stays in the process for the next update, at the cost of a few percent more resident memory
(measured over 400 tracked CPU-preset updates: 527 MB against 490-508 MB). Both must be set: a fixed trim
threshold alone also fixes the mmap threshold at its 128 kB default (glibc then stops raising it), and every
activation becomes an ``mmap`` (48 000 faults per update, 2x slower). Measured (``python
benchmarks/alloc_faults.py``; ``benchmarks/RESULTS.md``, "Page faults per update"): a CPU-preset update
without page faults and ~14 % faster with 1 thread, ~15 % with 2; a planned action (no_grad, already
fault-free) unchanged.

Importing :mod:`tdmpc` calls ``tune()``. It does nothing where the C library is not glibc (macOS, musl),
where either environment variable is set (that value wins, as with ``GOMP_SPINCOUNT`` in
:mod:`tdmpc.threads`), or with ``CA_PRUNE_MALLOC=default`` (glibc's own behaviour, e.g. to measure it).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
#: Largest block served from the heap: glibc's maximum mmap threshold on 64-bit (HEAP_MAX_SIZE / 2).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept before glibc trims it.
TRIM_THRESHOLD = 1024 * 1024 * 1024
OPT_OUT = "CA_PRUNE_MALLOC"
ENV_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

#: What the last ``tune()`` did: ``"tuned"``, or why it did nothing.
state = "not called"


def tune() -> str:
    """Set glibc's mmap and trim thresholds (see the module doc); returns and records what it did."""
    global state
    if os.environ.get(OPT_OUT, "").lower() == "default":
        state = f"off ({OPT_OUT}=default)"
    elif any(k in os.environ for k in ENV_KNOBS):
        state = "off (set in the environment)"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        state = "off (not glibc)"
    else:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        state = "tuned" if ok else "off (mallopt refused)"
    return state
