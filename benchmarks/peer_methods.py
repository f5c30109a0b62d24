"""The peers `benchmarks.peers` measures beside our modes: how each is applied to the naive
DenseNet's training step (`benchmarks.memory` builds it, and asks here for a peer's setting).
"""
import dataclasses
import functools
import os
import re

OPENAI_MODULE = 'memory_saving_gradients'


@dataclasses.dataclass(frozen=True)
class Peer(object):
    """A peer applied to the naive graph: a Grappler memory-optimizer level (and whether the
    naive graph's concat/batch-norm/ReLU ops carry `_recompute_hint`), or openai's gradients with
    a `checkpoints` setting."""
    name: str
    memory_optimization: str = ''
    hints: bool = False
    checkpoints: str = ''

    def minimize(self, optimizer, loss):
        """`optimizer.minimize(loss)`, its gradients computed as this peer computes them (openai's
        replace the function the optimizer calls, as its README shows for Keras; Grappler's
        MANUAL level recomputes the forward ops marked here)."""
        if self.hints:
            _hint_recomputation(loss.graph)
        if not self.checkpoints:
            return optimizer.minimize(loss)
        import memory_saving_gradients
        from models.compat import tf
        from tensorflow.python.ops import gradients
        if self.checkpoints == 'collection':
            for tensor in checkpoint_tensors(tf.get_default_graph()):
                tf.add_to_collection('checkpoints', tensor)
        original = gradients.gradients
        gradients.gradients = functools.partial(memory_saving_gradients.gradients,
                                                checkpoints=self.checkpoints)
        try:
            return optimizer.minimize(loss)
        finally:
            gradients.gradients = original

    def session_config(self):
        from models.compat import tf
        from tensorflow.core.protobuf import rewriter_config_pb2
        config = tf.ConfigProto()
        if self.memory_optimization:
            config.graph_options.rewrite_options.memory_optimization = getattr(
                rewriter_config_pb2.RewriterConfig, self.memory_optimization)
        return config


HINTED = ('ConcatV2', 'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3', 'Relu')
PEERS = dict((peer.name, peer) for peer in (
    Peer('grappler-heuristics', memory_optimization='RECOMPUTATION_HEURISTICS'),
    Peer('grappler-manual', memory_optimization='MANUAL', hints=True),
    Peer('openai-speed', checkpoints='speed'),
    Peer('openai-memory', checkpoints='memory'),
    Peer('openai-collection', checkpoints='collection'),
))
OURS = ('efficient', 'shared')
COLUMNS = ('naive',) + tuple(PEERS) + OURS
# The outputs openai's 'collection' keeps: each dense layer's new feature maps (its last
# convolution, in the naive graph without dropout) and each transition's (its pooling).
CHECKPOINTS = re.compile(r'^densenet/(denseblock\d+/denselayer\d+/conv2/Conv2D|'
                         r'transition\d+/pool/AvgPool)$')


def _hint_recomputation(graph):
    """Marks the naive graph's concatenations, batch norms and ReLUs for Grappler's MANUAL
    level to recompute."""
    from tensorflow.core.framework import attr_value_pb2
    for op in graph.get_operations():
        if op.name.startswith('densenet/') and op.type in HINTED:
            op._set_attr('_recompute_hint', attr_value_pb2.AttrValue(i=1))


def checkpoint_tensors(graph):
    """The naive graph's dense-layer and transition outputs; ValueError if there are none."""
    tensors = [op.outputs[0] for op in graph.get_operations() if CHECKPOINTS.match(op.name)]
    if not tensors:
        raise ValueError('no dense layer outputs matched %s' % CHECKPOINTS.pattern)
    return tensors


def openai_missing(directory):
    """Why openai's columns cannot be measured ('' if they can)."""
    from models import compat
    try:
        import tensorflow.contrib.graph_editor  # noqa: F401
    except ImportError:
        return 'not on TF %s (needs tf.contrib.graph_editor: TF 1.15)' % compat.VERSION
    if not directory:
        return 'not installed (--openai DIR)'
    if not os.path.isfile(os.path.join(directory, OPENAI_MODULE + '.py')):
        return 'not installed (no %s.py in %s)' % (OPENAI_MODULE, directory)
    if not os.path.isfile(os.path.join(directory, 'toposort.py')):
        return 'not installed (no toposort in %s: pip install --target %s toposort)' % (
            directory, directory)
    return ''
