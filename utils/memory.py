"""Peak memory of one session step, on CPU and GPU.

TF 1.15's `tf.contrib.memory_stats` only has GPU kernels (and 2.x has no contrib), so the
measure replays the allocation records a FULL_TRACE step leaves in `RunMetadata`: every
allocation and free, in time order, summed.
The result is the peak of bytes allocated during the step by each allocator; memory that was live
before the step (variables, optimizer slots) is not included.
"""
import collections

from models.compat import tf

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


def peak_bytes(sess, fetches, feed_dict=None):
    """Peak live bytes of one step of `fetches` on its compute device (GPU 0 if used, else CPU).

    Run a warm-up step first: the first step also allocates one-off buffers.
    """
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
    `allocator` defaults to the compute device's (as `peak_bytes` measures).

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
