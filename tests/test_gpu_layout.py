"""The layout a GPU trains in (channels_first), executed on this CPU: TensorFlow's CPU kernels
refuse NCHW convolutions, their gradients and average pooling, and XLA's CPU backend runs them.
`tests/xla_layouts.py` does it in a child process (TF_XLA_FLAGS is read when TensorFlow
starts); this module checks what it prints."""
import json
import os
import re
import subprocess

import pytest

from conftest import PYTHON, ROOT, child_environment
from models import compat
from xla_layouts import CASES

XLA_FLAGS = ' '.join(compat.XLA_FLAGS)  # what train.py --xla True turns on
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


@pytest.mark.slow
@pytest.mark.parametrize('efficient, fp16', [('True', 'False')] + (
    [('shared', 'True')] if compat.TF2 else []))  # 1.15: its own code (contrib's), as above
def test_a_run_trained_in_channels_first_evaluates_and_exports_in_channels_last(
        tmp_path, entry, efficient, fp16):
    """train.py --xla True in channels_first on this CPU (oneDNN off, so that TensorFlow's own
    kernels cannot run a single NCHW op: XLA runs them all), then eval.py of the same
    checkpoint in channels_last gives the metrics the run's own evaluation gave, and export.py
    freezes it."""
    model_dir = str(tmp_path / 'run')
    proc = subprocess.run(
        [PYTHON, os.path.join(ROOT, 'train.py'), '--xla', 'True', '--data_format',
         'channels_first', '--efficient', efficient, '--fp16', fp16, '--depth', '10',
         '--growth_rate', '4', '--max_steps', '3', '--model_dir', model_dir, '--seed', '1'],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        env=dict(child_environment(), TF_ENABLE_ONEDNN_OPTS='0'))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'XLA compiles the backward pass too' in proc.stdout, proc.stdout
    trained = re.search(r'step 3: loss ([\d.]+), top-1 ([\d.]+)% on 360', proc.stdout)
    out = entry('eval.py', '--model_dir', model_dir, '--fp16', fp16).stdout
    evaluated = re.search(r'loss ([\d.]+), top-1 ([\d.]+)% on 360', out)
    assert trained and evaluated, (proc.stdout, out)
    loss, top1 = (float(v) for v in trained.groups())
    tolerance = 2e-2 if fp16 == 'True' else 1e-3  # the two layouts sum in different orders
    assert abs(float(evaluated.group(1)) - loss) <= tolerance * loss, (trained, evaluated)
    assert abs(float(evaluated.group(2)) - top1) <= (1.0 if fp16 == 'True' else 0.3), out
    entry('export.py', '--model_dir', model_dir, '--output', str(tmp_path / 'model.pb'))
    assert (tmp_path / 'model.pb').stat().st_size > 0


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


def test_cluster_by_layer_backward_clusters_each_parts_gradient_on_its_own():
    """For channels_first on a CPU: the backward pass compiles too, a part's gradient (its
    recomputation with it) in a scope of its own beside the part's forward scope."""
    import models
    from models.compat import tf
    from models.xla import KEPT_OUT, cluster_by_layer
    with tf.Graph().as_default() as graph:
        logits = models.densenet_bc(tf.zeros([2, 8, 8, 3]), 10, depth=10, growth_rate=4,
                                    efficient=True, data_format='channels_last')()
        tf.gradients(tf.reduce_sum(logits), tf.trainable_variables())
        cluster_by_layer(graph, backward=True)
    scopes = set()
    for op in graph.get_operations():
        if op.type in KEPT_OUT:
            assert op.get_attr('_XlaCompile') is False, op.name
        elif op.name.startswith('gradients/') and '/denseblock2/denselayer1/' in op.name:
            scopes.add(op.get_attr('_XlaInternalScope'))
    assert scopes == {b'backward/densenet/denseblock2/denselayer1'}


def test_xla_flags_without_xla_true_are_named_at_the_start(monkeypatch, caplog):
    """A user's TF_XLA_FLAGS auto-clustering undoes the saving: one line says so and what
    keeps it (the flags are read, not applied: this process's sessions stay as they are)."""
    from models.densenet import Recomputation
    from utils import run_loop
    from utils.config import TrainConfig
    config = TrainConfig(model_dir='unused', batch_size=8, train_epochs=1, epochs_per_eval=0,
                         learning_rate=None, data_format='channels_last',
                         efficient=Recomputation.parse('shared'))
    propagate = run_loop.LOG.propagate  # an entry point run before in this process unsets it
    run_loop.LOG.addHandler(caplog.handler)
    run_loop.LOG.propagate = False
    try:
        for flags, named in (('--tf_xla_auto_jit=2', True), ('--tf_xla_auto_jit=0', False),
                             ('--tf_xla_cpu_global_jit', False)):
            monkeypatch.setenv('TF_XLA_FLAGS', flags)
            caplog.clear()
            run_loop._start_xla(config, report=True)
            lines = [r.getMessage() for r in caplog.records]
            assert len(lines) == named and all(
                'add --xla True to keep it' in line and '(shared)' in line for line in lines), lines
    finally:
        run_loop.LOG.removeHandler(caplog.handler)
        run_loop.LOG.propagate = propagate
