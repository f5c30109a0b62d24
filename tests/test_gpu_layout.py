"""The layout a GPU trains in (channels_first), executed on this CPU: TensorFlow's CPU kernels
refuse NCHW convolutions, their gradients and average pooling, and XLA's CPU backend runs them.
`tests/xla_layouts.py` does it in a child process (TF_XLA_FLAGS is read when TensorFlow
starts); this module checks what it prints."""
import json
import os
import subprocess

import pytest

from conftest import PYTHON, ROOT, child_environment
from models import compat
from xla_layouts import CASES

XLA_FLAGS = '--tf_xla_cpu_global_jit --tf_xla_auto_jit=2'
# float64: the layouts differ only in summation order. float16 activations (with float32
# batch statistics and master weights, as --fp16 runs on a GPU): their precision, ~1e-3.
TOLERANCE = {'float64': 1e-9, 'float16': 2e-2}
# XLA compiles about three times slower on TF 1.15: there, only the mode whose code is its own
# (contrib's recompute_grad; the shared mode's gradients are the same code on every stack).
STACK_CASES = sorted(CASES) if compat.TF2 else ['efficient']


@pytest.mark.slow
def test_channels_first_gives_channels_last_loss_gradients_and_moving_averages():
    """Each mode (naive, True, shared, a partial plan, MFM, shared in float16): the loss, every
    gradient and every batch-norm moving average after a step, channels_first against
    channels_last, the same weights and images."""
    proc = subprocess.run(
        [PYTHON, os.path.join(ROOT, 'tests', 'xla_layouts.py')] + STACK_CASES, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        env=dict(child_environment(), TF_XLA_FLAGS=XLA_FLAGS))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(results) == STACK_CASES
    for case, result in results.items():
        assert result['nonzero'] and result['count'] > 40, (case, result)
        assert result['largest'] <= TOLERANCE[CASES[case][1]], (case, result)


def test_cluster_by_layer_scopes_the_forward_and_keeps_the_backward_out_of_xla():
    """Graph only: each part of the forward pass in a scope of its own, the backward pass (the
    recomputation with it) and the custom gradients' identities marked not to compile."""
    import models
    from models.compat import tf
    from models.xla import KEPT_OUT, cluster_by_layer
    with tf.Graph().as_default() as graph:
        images = tf.zeros([2, 8, 8, 3])
        logits = models.densenet_bc(images, 10, depth=10, growth_rate=4, efficient=True,
                                    data_format='channels_last')()
        loss = tf.losses.sparse_softmax_cross_entropy([0, 1], logits)
        tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
        scoped, kept_out = cluster_by_layer(graph)
        ops = graph.get_operations()
    backward = [op for op in ops if op.name.startswith('gradients/')]
    assert backward and scoped > 100 and kept_out >= len(backward)
    for op in backward + [op for op in ops if op.type in KEPT_OUT]:
        assert op.get_attr('_XlaCompile') is False, op.name
    for op in ops:
        if op.name.startswith('densenet/denseblock2/denselayer1/') and op.type not in KEPT_OUT:
            assert op.get_attr('_XlaInternalScope') == b'densenet/denseblock2/denselayer1'
        elif op.name.startswith('densenet/transition1/') and op.type not in KEPT_OUT:
            assert op.get_attr('_XlaInternalScope') == b'densenet/transition1'
