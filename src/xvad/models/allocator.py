"""Letting the C allocator keep freed memory, so the backbone's activations reuse it.

glibc's malloc gives blocks above its mmap threshold straight back to the system when they are freed,
and maps fresh pages for the next one; the backbone's activations are such blocks, so every call
touched new memory, and the page faults cost as much as the convolutions. Raising the threshold to
glibc's largest (32 MiB) and the trim threshold with it keeps that memory in the heap for the next
call (the process keeps its peak heap). With the backbone's calls of at most 8 images and its fused
convolutions, this takes the shipped model's backbone from 15.2 to 9.8 ms of CPU a frame
(``bench/bench_backbone_memory.py``; alone, with one big call, it does not help). The CLI does this
for every command; a program that uses the library directly can call :func:`keep_freed_memory` once.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
M_TRIM_THRESHOLD = -1              # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 256 * 1024 * 1024
_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 32 MiB for reuse; False (and no change) where
    the C library is not glibc. Safe to call more than once."""
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version   # glibc only: other C libraries' mallopt differ or do nothing
    except (OSError, AttributeError, TypeError):
        return False
    gnu.restype = ctypes.c_char_p
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        log.debug("mallopt refused the thresholds (glibc %s)", gnu().decode())
        return False
    _kept = True
    return True
