"""The GPU layout executed on this CPU: a child process (TF_XLA_FLAGS must be set before
TensorFlow starts) that builds each case of `CASES` in channels_first and in channels_last,
under `tf.xla.experimental.jit_scope()` so that XLA's CPU backend runs what TensorFlow's CPU
kernels refuse (NCHW convolutions, their gradients, average pooling), gives both the same
weights, runs one step and prints, per case, the largest relative difference of the loss, of
every gradient and of every batch-norm moving average after the step, as JSON.

    TF_XLA_FLAGS="--tf_xla_cpu_global_jit --tf_xla_auto_jit=2" python tests/xla_layouts.py CASE...
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import models  # noqa: E402
from models.compat import tf  # noqa: E402

BATCH, SIZE, CLASSES = 4, 8, 10
# name -> (DenseNetCreator keywords beside DenseNet-BC-10 k=4: one layer per block, the least
# that concatenates; dtype). XLA's compile time is most of the cost: the graphs stay tiny.
CASES = {
    'naive': (dict(efficient=False), 'float64'),
    'efficient': (dict(efficient=True), 'float64'),
    'shared': (dict(efficient='shared', depth=16), 'float64'),
    'every=2': (dict(efficient='every=2', depth=16), 'float64'),
    'mfm': (dict(efficient=True, mfm_transitions=(2,), mfm_layers=(1,)), 'float64'),
    'fp16': (dict(efficient='shared'), 'float16'),
}


def step(case, data_format):
    """{'loss': x, 'grad/NAME': array, 'moving/NAME': array} of one step of `case`."""
    kwargs, dtype = CASES[case]
    config = dict(bottleneck=True, depth=10, growth_rate=4, reduction=0.5)
    config.update(kwargs)
    rng = np.random.RandomState(0)
    images = rng.randn(BATCH, SIZE, SIZE, 3)
    with tf.Graph().as_default(), tf.xla.experimental.jit_scope():
        x = tf.cast(tf.constant(images), dtype)
        if data_format == 'channels_first':
            x = tf.transpose(x, [0, 3, 1, 2])
        model = models.DenseNetCreator(x, CLASSES, data_format=data_format, **config)
        logits = tf.cast(model(), tf.float64)
        loss = tf.losses.sparse_softmax_cross_entropy(np.arange(BATCH) % CLASSES, logits)
        variables = tf.trainable_variables()
        grads = tf.gradients(loss, variables)
        moving = [v for v in tf.global_variables() if 'moving' in v.op.name]
        feed = {model.dropout_seed: [7, 11]} if model.dropout_seed is not None else {}
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            for var in sorted(tf.global_variables(), key=lambda v: v.op.name):
                value = rng.randn(*var.shape.as_list()) * 0.1
                if 'moving_variance' in var.op.name or var.op.name.endswith('gamma'):
                    value = 1.0 + np.abs(value)
                var.load(value.astype(var.dtype.base_dtype.as_numpy_dtype), sess)
            loss_value, grad_values, _ = sess.run([loss, grads, model.update_ops], feed)
            after = sess.run(moving)
    result = {'loss': np.asarray(loss_value)}
    result.update(('grad/' + v.op.name, g) for v, g in zip(variables, grad_values))
    result.update(('moving/' + v.op.name, a) for v, a in zip(moving, after))
    return result


def compare(case):
    """{'largest': the largest relative difference, 'where': its name, 'count': values}."""
    first, last = step(case, 'channels_first'), step(case, 'channels_last')
    assert sorted(first) == sorted(last), (sorted(first), sorted(last))
    worst, where = 0.0, None
    for name in sorted(last):
        a, b = np.asarray(first[name], np.float64), np.asarray(last[name], np.float64)
        error = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))
        if not np.all(np.isfinite(a)) or error > worst or where is None:
            worst, where = (float('inf') if not np.all(np.isfinite(a)) else error), name
    return dict(largest=worst, where=where, count=len(last),
                nonzero=all(np.any(np.asarray(last[n]) != 0) for n in last if 'grad/' in n))


if __name__ == '__main__':
    print(json.dumps({case: compare(case) for case in sys.argv[1:]}))
