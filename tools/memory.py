"""Peak extra memory of a call, measured in-process.

Two measures, of which `peak_extra_bytes` takes the larger:

- TF's CPU allocator: its peak bytes in use during the call
  (`tf.config.experimental.reset_memory_stats` / `get_memory_info` on
  "CPU:0") minus its bytes in use before. This sees every tensor, eager,
  graph and XLA's temporaries alike, whatever the allocator keeps cached:
  with oneDNN (TF's default on x86) the CPU allocator is a pool that keeps
  freed memory resident, so a repeated call adds no resident memory at all.
- The process's resident set (Linux): VmHWM from /proc/self/status after the
  call minus VmRSS before, with the peak reset by writing "5" to
  /proc/self/clear_refs, after garbage collection and `malloc_trim`. This
  also sees memory that bypasses TF's allocator, where the allocator does
  not pool (`TF_ENABLE_ONEDNN_OPTS=0` without `TF_CPU_ALLOCATOR_USE_BFC`).
"""

import ctypes
import ctypes.util
import gc
import os

import tensorflow as tf

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def _status_bytes(key):
    with open(_STATUS, encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"{key} is not in {_STATUS}")


def resident_supported():
    """True where the resident peak can be reset and read (Linux procfs)."""
    if not (os.path.exists(_STATUS) and os.access(_CLEAR_REFS, os.W_OK)):
        return False
    try:
        _reset_peak()
        _status_bytes("VmHWM")
    except (OSError, RuntimeError):
        return False
    return True


def _reset_peak():
    with open(_CLEAR_REFS, "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


_DEVICE = "CPU:0"


def allocator_supported():
    """True where TF's CPU allocator reports its peak."""
    try:
        tf.config.experimental.reset_memory_stats(_DEVICE)
        return "peak" in tf.config.experimental.get_memory_info(_DEVICE)
    except (ValueError, tf.errors.OpError):
        return False


def supported():
    return allocator_supported() or resident_supported()


def peak_extra_bytes(call):
    """(peak bytes `call()` adds, its result): the larger of the two measures.

    The result stays alive until after the peak is read, so it counts: a
    gradient's own bytes are part of the figure.
    """
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    allocator = allocator_supported()  # also resets the allocator's peak
    if allocator:
        in_use = tf.config.experimental.get_memory_info(_DEVICE)["current"]
    resident = resident_supported()  # also resets the resident peak
    if resident:
        rss = _status_bytes("VmRSS")
    result = call()
    extra = 0
    if resident:
        extra = _status_bytes("VmHWM") - rss
    if allocator:
        extra = max(extra, tf.config.experimental.get_memory_info(
            _DEVICE)["peak"] - in_use)
    return max(extra, 0), result


def peak_extra_ratio(call, nbytes, warmup=1, calls=1):
    """The largest peak_extra_bytes(call) / nbytes over `calls` calls.

    `warmup` calls come first, unmeasured: a function's first call traces
    or compiles, which is not the penalty's memory.
    """
    for _ in range(warmup):
        call()
    ratios = []
    for _ in range(calls):
        extra, result = peak_extra_bytes(call)
        del result
        ratios.append(extra / nbytes)
    return max(ratios)


# The bound every regularizer meets on a large tensor (16M float32 elements,
# tests/battery.py and tools/bench.py's memory case): peak extra memory, the
# returned gradient included, at most BOUND times the weight's bytes in eager
# mode (with a tape or value only), tf.function and jit_compile. The
# closed-form and TFP priors stay within 3, MeanFieldKL within 4.5.
BOUND = 6.0


def bound(regularizer):
    """The peak-memory bound of `regularizer`, in multiples of its weight's
    bytes: BOUND for every class."""
    del regularizer  # one bound for all
    return BOUND
