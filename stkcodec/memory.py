"""Handing freed memory back to the system between the pieces of a large image.

glibc's allocator keeps freed blocks for reuse, and a large image's windows and chunks allocate
tens of megabytes each in shifting sizes, so its heap grows past what any one piece needs (a
4.5-megapixel image peaked at 730 MB). `malloc_trim` returns the free pages; it costs a system
call, so stkc calls it only between pieces of a large image, never per 150×100 frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> None:
    """Return freed heap pages to the system (glibc only; elsewhere nothing happens)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
