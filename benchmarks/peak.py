"""Peak memory of one session step: the bytes it allocates on top of what was live before it
(variables, optimizer slots).

Two measures of the same thing:
- `peak_bytes`, without a trace: TensorFlow's own allocator statistics. The CPU allocator keeps
  them when it is a BFC allocator, which `TF_CPU_ALLOCATOR_USE_BFC=true` makes it, on TF 1.15
  and 2.x alike, if set before TensorFlow starts (`TF_CPU_BFC_MEM_LIMIT_IN_MB` caps it, 64 GiB
  by default: a step then fits, fragmentation included, or fails with ResourceExhausted, as on a
  GPU, whose allocator is a BFC one anyway). TF 2 reads them with
  `tf.config.experimental.get_memory_info`; TF 1.15 has no Python call for them (contrib's
  MaxBytesInUse has only a GPU kernel), so a small op, `allocator_stats.cc`, compiled against
  the installed TensorFlow's headers on first use, reads them.
- `traced_peak_bytes`: replays the allocation records a FULL_TRACE step leaves in
  `RunMetadata`, every allocation and free in time order. It also says what holds the peak
  (`live_at_peak`), but tracing grows the process far beyond what it records (a traced BC-220
  step exhausted 24 GiB): use it for diagnostics on small graphs.
"""
import collections
import hashlib
import os
import subprocess

from models.compat import tf

BFC_VARIABLE = 'TF_CPU_ALLOCATOR_USE_BFC'
LIMIT_VARIABLE = 'TF_CPU_BFC_MEM_LIMIT_IN_MB'
_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'allocator_stats.cc')


class AllocatorStats(object):
    """Bytes in use and their peak on this process's CPU allocator (`reset` sets the peak to
    what is in use). RuntimeError unless it is a BFC allocator (`TF_CPU_ALLOCATOR_USE_BFC`)."""

    def __init__(self):
        if os.environ.get(BFC_VARIABLE, '').lower() not in ('1', 'true'):
            raise RuntimeError('the allocator peak needs %s=true set before TensorFlow starts'
                               % BFC_VARIABLE)
        self._v2 = hasattr(tf.config.experimental, 'get_memory_info')
        if not self._v2:
            library = tf.load_op_library(_compiled_library())
            with tf.name_scope('allocator_stats'):
                self._reset = library.allocator_stats(reset=True)
                self._read = library.allocator_stats()

    def reset(self, sess):
        """Bytes in use now; the peak starts again from them."""
        if self._v2:
            in_use = tf.config.experimental.get_memory_info('CPU:0')['current']
            tf.config.experimental.reset_memory_stats('CPU:0')
            return in_use
        return int(sess.run(self._reset)[0])

    def peak(self, sess):
        """The most bytes in use since the last `reset`."""
        if self._v2:
            return tf.config.experimental.get_memory_info('CPU:0')['peak']
        return int(sess.run(self._read)[1])


def peak_bytes(sess, fetches, stats, feed_dict=None):
    """Peak bytes one run of `fetches` allocates on the CPU on top of what was in use before,
    from `stats` (an `AllocatorStats` made in the session's graph). Run a warm-up step first:
    the first step also allocates one-off buffers."""
    before = stats.reset(sess)
    sess.run(fetches, feed_dict=feed_dict)
    return stats.peak(sess) - before


def _compiled_library():
    """allocator_stats.cc built for the installed TensorFlow (once: the .so is cached)."""
    flags = tf.sysconfig.get_compile_flags() + tf.sysconfig.get_link_flags()
    with open(_SOURCE, 'rb') as f:
        key = hashlib.sha1(f.read() + ' '.join(flags).encode()).hexdigest()[:12]
    cache = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'),
                         'densenet-tf')
    library = os.path.join(cache, 'allocator_stats-%s.so' % key)
    if os.path.exists(library):
        return library
    os.makedirs(cache, exist_ok=True)
    partial = '%s.%d.tmp' % (library, os.getpid())
    command = ['c++', '-std=c++11', '-shared', '-fPIC', '-O2', _SOURCE, '-o', partial] + flags
    try:
        built = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               universal_newlines=True)
    except OSError as e:
        raise RuntimeError('the allocator peak on this TensorFlow needs a C++ compiler (c++) '
                           'to build %s: %s' % (_SOURCE, e))
    if built.returncode:
        raise RuntimeError('building %s failed: %s' % (_SOURCE, built.stdout[-2000:]))
    os.replace(partial, library)
    return library


# Allocators that hold a device's tensors; host staging allocators are reported but not summed in.
_DEVICE_ALLOCATORS = ('cpu', 'mklcpu', 'GPU_0_bfc')


def peak_bytes_by_allocator(run_metadata):
    """{allocator name: peak live bytes} replayed from a traced step's allocation records."""
    events = collections.defaultdict(list)
    for dev_stats in run_metadata.step_stats.dev_stats:
        for node_stats in dev_stats.node_stats:
            for memory in node_stats.memory:
                for record in memory.allocation_records:
                    events[memory.allocator_name].append((record.alloc_micros,
                                                          record.alloc_bytes))
    peaks = {}
    for allocator, records in events.items():
        # At equal times, frees (negative) go first: they may not be counted as overlapping.
        records.sort()
        live = peak = 0
        for _, delta in records:
            live += delta
            peak = max(peak, live)
        peaks[allocator] = peak
    return peaks


def traced_run(sess, fetches, feed_dict=None):
    """Runs `fetches` once with a full trace; returns (results, RunMetadata)."""
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    run_metadata = tf.RunMetadata()
    results = sess.run(fetches, feed_dict=feed_dict, options=options, run_metadata=run_metadata)
    return results, run_metadata


def traced_peak_bytes(sess, fetches, feed_dict=None):
    """Peak live bytes of one traced step of `fetches` on its compute device (GPU 0 if used,
    else CPU), replayed from its allocation records. Run a warm-up step first."""
    _, run_metadata = traced_run(sess, fetches, feed_dict)
    peaks = peak_bytes_by_allocator(run_metadata)
    return peaks[_device_allocator(peaks)]


def _device_allocator(peaks):
    """The allocator of `peaks` that holds the compute device's tensors: GPU 0's if used, else
    the CPU's ('mklcpu' where TensorFlow uses oneDNN, as TF 2 does on x86), else the largest."""
    if not peaks:
        raise RuntimeError('the traced step recorded no allocations; was anything computed?')
    for name in reversed(_DEVICE_ALLOCATORS):
        if name in peaks:
            return name
    return max(peaks, key=peaks.get)


def live_at_peak(run_metadata, allocator=None, top=20):
    """What holds memory at the step's peak: [(bytes live, node name)], largest first;
    `allocator` defaults to the compute device's (as `traced_peak_bytes` measures).

    Each allocation record belongs to the node that allocated the buffer (frees are recorded there
    too), so summing a node's records up to the peak's time gives what it still holds then.
    """
    allocator = allocator or _device_allocator(peak_bytes_by_allocator(run_metadata))
    per_node = []
    for dev_stats in run_metadata.step_stats.dev_stats:
        for node_stats in dev_stats.node_stats:
            for memory in node_stats.memory:
                if memory.allocator_name == allocator and memory.allocation_records:
                    per_node.append((node_stats.node_name, [
                        (r.alloc_micros, r.alloc_bytes) for r in memory.allocation_records]))
    events = sorted(e for _, records in per_node for e in records)
    live = peak = 0
    peak_time = None
    for time, delta in events:
        live += delta
        if live > peak:
            peak, peak_time = live, time
    holders = [(sum(b for t, b in records if t <= peak_time), name) for name, records in per_node]
    return sorted([h for h in holders if h[0] > 0], reverse=True)[:top]
