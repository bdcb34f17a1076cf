"""How the CPU runs training: subnormal numbers, host memory (glibc malloc), and whether bfloat16 is native.

Subnormals (|x| < 1.2e-38 in float32) arise in training these models (docs/performance.md: Adam's second
moments of rarely used weights, sigmoid gradients of saturated pixels, far tails of log densities);
on many x86 CPUs every operation on one takes a microcode assist of ~100 cycles, so a step can take
several times as long as it needs to. Flushing them to zero (FTZ/DAZ in the MXCSR register) costs
nothing and changes values only below 1.2e-38. It is the default on CPUs; --ieee-denormals keeps
IEEE behaviour.

torch.set_flush_denormal sets the register of the calling thread only: torch's OpenMP threads that
already exist keep theirs (new threads inherit their creator's). set_flush_denormal below also
sets it in every thread of the OpenMP team through libgomp (the OpenMP runtime of torch's Linux
wheels), and flushes_denormals checks the result on a multi-threaded product.
"""
import contextlib
import ctypes
import os
import platform
import re

import torch

SUBNORMAL_PROBE = 1e-30  # x 1e-10 = 1e-40: subnormal in float32, 0 when flushed


def set_flush_denormal(on):
    """Flush subnormals to zero (on) or keep IEEE behaviour, in this thread and torch's OpenMP threads."""
    torch.set_flush_denormal(on)
    gomp = _libgomp()
    if gomp is not None and torch.get_num_threads() > 1:
        callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(on))
        gomp.GOMP_parallel(callback, None, ctypes.c_uint(torch.get_num_threads()), ctypes.c_uint(0))


def flushes_denormals():
    """Whether a float32 product with a subnormal result gives 0 on every thread that computes it."""
    x = torch.full((1 << 20,), SUBNORMAL_PROBE)  # large enough to be split among the threads
    return int(torch.count_nonzero(x * 1e-10)) == 0


@contextlib.contextmanager
def cpu_denormals(ieee=False):
    """Subnormals flushed to zero inside the block (ieee: IEEE behaviour), as before it afterwards."""
    before = flushes_denormals()
    set_flush_denormal(not ieee)
    try:
        yield
    finally:
        set_flush_denormal(before)


_GOMP = []


def _libgomp():
    """torch's libgomp (None if another OpenMP runtime, or none, is loaded). Other packages load their own
    copies (scikit-learn's wheels do): the one in torch's directory, else the system's."""
    if not _GOMP:
        try:
            with open('/proc/self/maps') as f:
                paths = sorted(set(re.findall(r'(/\S*libgomp\S*\.so\S*)', f.read())))
        except OSError:
            paths = []
        torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
        ours = [p for p in paths if os.path.realpath(p).startswith(torch_dir)] or \
            [p for p in paths if os.path.basename(p).startswith('libgomp.so')]
        _GOMP.append(ctypes.CDLL(ours[0]) if ours else None)
    return _GOMP[0]


# ---------------------------------------------------------------- host memory

# A training step allocates and frees tensors of tens to hundreds of MB (the decoders' activations and
# gradients for K x batch samples). glibc's malloc serves a block above its mmap threshold (which adapts
# up to 32 MiB) with a fresh mmap and unmaps it when freed, so every step touches those pages anew: a
# page fault and a zeroed page per 4 KiB: a paper step took 3.0 s instead of 1.8 s on 2 cores
# (docs/performance.md).
# Kept: every block from the heap and freed memory kept there for the next step, as torch's CUDA caching
# allocator keeps GPU memory. The price is resident memory: the process stays at its peak, and glibc's
# aligned allocations (torch's) leave some freed blocks unused: 2.5 GB instead of 1.9 GB at the peak of
# a paper run, steady from its first epoch on.
# glibc's mallopt parameters (malloc.h):
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2 ** 31 - 1}
# glibc's behaviour once its threshold has adapted as far as it goes (setting any parameter ends the
# adaptation, so this is what going back can mean): blocks above 32 MiB mapped and unmapped, the heap
# trimmed when more than 64 MiB at its top is free
GLIBC = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: 64 << 20, M_MMAP_MAX: 65536}
_KEPT = [False]


def keep_host_memory(keep):
    """Keep freed host memory for reuse (True) or go back to glibc's behaviour (False); untouched until
    first kept. Returns whether memory is kept: never where the C library is not glibc (other
    allocators keep or return memory in their own ways)."""
    libc = _glibc()
    if libc is not None and keep != _KEPT[0]:
        for param, value in (KEEP if keep else GLIBC).items():
            libc.mallopt(param, value)
        _KEPT[0] = keep
    return _KEPT[0]


def host_memory_kept():
    """Whether freed host memory is kept now (keep_host_memory)."""
    return _KEPT[0]


@contextlib.contextmanager
def host_memory(keep=True):
    """Freed host memory kept for reuse inside the block (keep=False: glibc's behaviour), as before it
    afterwards."""
    before = _KEPT[0]
    keep_host_memory(keep)
    try:
        yield
    finally:
        keep_host_memory(before)


_LIBC = []


def _glibc():
    """The process's C library if it is glibc (None elsewhere: musl, macOS, Windows)."""
    if not _LIBC:
        libc = ctypes.CDLL(None) if platform.libc_ver()[0] == 'glibc' else None
        _LIBC.append(libc if hasattr(libc, 'mallopt') else None)
    return _LIBC[0]


# ---------------------------------------------------------------- bfloat16

def native_bf16(device):
    """(True/False, why): whether the device computes bfloat16 matrix products natively: a GPU of compute
    capability 8.0 or more (Ampere on), a CPU with AMX-BF16 or AVX512-BF16."""
    if device.type == 'cuda':
        major, minor = torch.cuda.get_device_capability(device)
        return major >= 8, f'compute capability {major}.{minor}'
    flags = cpu_flags()
    have = [f for f in ('amx_bf16', 'avx512_bf16') if f in flags]
    return bool(have), ', '.join(have) if have else 'no amx_bf16 or avx512_bf16 in the CPU flags'


def cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            return set(re.search(r'^flags\s*:(.*)$', f.read(), re.M).group(1).split())
    except (OSError, AttributeError):
        return set()
