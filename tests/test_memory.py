"""Training memory: efficient grows with depth far slower than naive, shared slower still, and
the two peak measures (the allocator's statistics, the trace replay) agree."""
import functools
import json
import subprocess

import numpy as np
import pytest

import models
from benchmarks import peak
from conftest import PYTHON, ROOT, child_environment
from helpers import HANG_GUARD
from models.compat import tf

BATCH, SIZE, GROWTH = 32, 16, 12


@functools.lru_cache(maxsize=None)
def _train_step_peak(layers, efficient):
    """Peak bytes of one SGD step of a one-block DenseNet-BC with `layers` layers (the same
    every time: measured once per process)."""
    with tf.Graph().as_default():
        rng = np.random.RandomState(0)
        img = tf.constant(rng.randn(BATCH, SIZE, SIZE, 3).astype(np.float32))
        model = models.DenseNetCreator(img, 10, bottleneck=True, growth_rate=GROWTH,
                                       nb_dense_block=1, nb_layers_per_block=layers,
                                       efficient=efficient, data_format='channels_last')
        loss = tf.losses.sparse_softmax_cross_entropy(np.arange(BATCH) % 10, model())
        train = tf.group(tf.train.GradientDescentOptimizer(0.01).minimize(loss), *model.update_ops)
        # One inter-op thread: the same execution order, so the same peak, every run.
        config = tf.ConfigProto(inter_op_parallelism_threads=1)
        with tf.Session(config=config) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train)  # warm-up
            return peak.traced_peak_bytes(sess, train)


def test_peak_bytes_counts_a_known_allocation():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [256, 1024])
        y = tf.reduce_sum(tf.matmul(x, x, transpose_b=True))  # a 256 x 256 float32 product
        with tf.Session() as sess:
            feed = {x: np.ones([256, 1024], np.float32)}
            peak_bytes = peak.traced_peak_bytes(sess, y, feed)
            _, run_metadata = peak.traced_run(sess, y, feed)
    assert 256 * 256 * 4 <= peak_bytes < 4 * 256 * 1024 * 4
    holders = peak.live_at_peak(run_metadata)
    assert holders and sum(b for b, _ in holders) == peak_bytes


def test_efficient_memory_grows_far_slower_than_naive():
    """Fails if the concatenation of earlier features leaves the recomputed function.

    Measured here (MiB at 4 / 24 layers): naive 83 / 383, efficient 69 / 140. What the extra 20
    layers cost relative to naive: 0.24 done right, 0.44 with the concatenation moved outside the
    recomputed function (the older TF port's layout).
    """
    shallow, deep = 4, 24
    naive = [_train_step_peak(n, False) for n in (shallow, deep)]
    efficient = [_train_step_peak(n, True) for n in (shallow, deep)]
    relative_growth = (efficient[1] - efficient[0]) / float(naive[1] - naive[0])
    print('naive %s, efficient %s, relative growth %.2f' % (naive, efficient, relative_growth))
    assert naive[1] > 4 * naive[0]          # quadratic: 6x the layers, ~4.6x the peak
    assert efficient[1] < 0.4 * naive[1]
    assert relative_growth < 0.33


@pytest.mark.parametrize('efficient', [True, False])
def test_recomputed_convolutions_compute_their_filter_gradient_first(efficient):
    """Each recomputed convolution's input gradient waits for its filter gradient (see
    `models.recompute.filter_gradient_first`); the naive graph is left to the executor."""
    with tf.Graph().as_default() as graph:
        img = tf.zeros([2, 8, 8, 3])
        model = models.DenseNetCreator(img, 10, bottleneck=True, growth_rate=4,
                                       nb_dense_block=2, nb_layers_per_block=2,
                                       efficient=efficient, data_format='channels_last')
        tf.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_sum(model()))
    ops = graph.get_operations()
    inputs = [op for op in ops if op.type == 'Conv2DBackpropInput']
    ordered = [op for op in inputs if any(
        c.type == 'Conv2DBackpropFilter' and c.inputs[2] is op.inputs[2]  # the same gradient
        for c in op.control_inputs)]
    # 2 x 2 dense layers of two convolutions, a transition and the stem (whose input gradient
    # is built though nothing needs it)
    assert len(inputs) == 10
    assert len(ordered) == (10 if efficient else 0), [op.name for op in inputs]


def test_shared_statistics_memory_grows_slower_than_efficient():
    """Fails if a full-width concatenation (or a per-layer copy of earlier features) reappears
    in efficient='shared': its peak must grow with depth clearly slower than efficient=True's,
    which concatenates each layer's whole input in its backward pass.

    Measured here (MiB at 4 / 24 layers, TF 1.15): efficient 40 / 70, shared 16 / 25.
    """
    shallow, deep = 4, 24
    efficient = [_train_step_peak(n, True) for n in (shallow, deep)]
    shared = [_train_step_peak(n, 'shared') for n in (shallow, deep)]
    print('efficient %s, shared %s' % (efficient, shared))
    assert shared[1] < efficient[1]
    assert shared[1] - shared[0] < 0.6 * (efficient[1] - efficient[0])


# Runs in a process started with the BFC allocator: one DenseNet-BC-16 step per mode, whose peak
# is read both from the allocator's statistics and from the same step's trace.
BOTH_MEASURES = """
import json, sys
sys.path.insert(0, %r)
import numpy as np
import models
from benchmarks import peak
from models.compat import tf
results = {}
for setting in (False, True, 'shared'):
    with tf.Graph().as_default():
        images = tf.constant(np.random.RandomState(0).rand(16, 16, 16, 3).astype(np.float32))
        logits = models.densenet_bc(images, 10, depth=16, growth_rate=8, efficient=setting,
                                    data_format='channels_last')()
        loss = tf.losses.sparse_softmax_cross_entropy(np.arange(16) %% 10, logits)
        train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
        stats = peak.AllocatorStats()
        with tf.Session(config=tf.ConfigProto(inter_op_parallelism_threads=1)) as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(train)
            before = stats.reset(sess)
            _, metadata = peak.traced_run(sess, train)
            allocator = stats.peak(sess) - before
            traced = peak.peak_bytes_by_allocator(metadata)
    results[str(setting)] = [allocator, max(traced.values())]
print(json.dumps(results))
""" % ROOT


def test_the_allocator_peak_equals_the_trace_replay():
    """The benchmark's measure (BFC statistics, no trace) against the replay of the same step's
    allocation records, on this stack, in each mode."""
    env = dict(child_environment(), TF_CPU_ALLOCATOR_USE_BFC='true')
    proc = subprocess.run([PYTHON, '-c', BOTH_MEASURES], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env,
                          timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for setting, (allocator, traced) in results.items():
        assert traced > 1 << 20, setting
        assert abs(allocator - traced) <= 4096, (setting, allocator, traced)  # the stats op


def test_the_allocator_peak_needs_the_bfc_allocator(monkeypatch):
    monkeypatch.delenv(peak.BFC_VARIABLE, raising=False)
    with pytest.raises(RuntimeError, match='TF_CPU_ALLOCATOR_USE_BFC=true'):
        peak.AllocatorStats()
