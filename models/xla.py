"""XLA auto-clustering that keeps the recomputation's saving (benchmarks/README.md, "Under XLA").

Auto-clustering (`TF_XLA_FLAGS="--tf_xla_auto_jit=2"`, with `--tf_xla_cpu_global_jit` on a CPU,
or a session's `global_jit_level`) joins connected compilable ops into clusters, each run as
one kernel once all of its inputs are ready; inside a cluster control dependencies mean
nothing. Left to itself it merges the recomputed layers with their neighbours and keeps what
recomputation was meant to drop. `cluster_by_layer` marks a built training graph so that it
keeps the saving:

- the forward pass clusters layer by layer: each op of a dense layer, transition, the stem,
  the final norm or the classifier gets that part's `_XlaInternalScope`, the attribute
  auto-clustering respects (it ignores `_XlaScope`, which `tf.xla.experimental.jit_scope`
  sets; tensorflow/compiler/jit/mark_for_compilation_pass.cc); any other op a scope of its own;
- the backward pass, the recomputation with it, and the custom gradients' Identity/IdentityN
  ops stay with TensorFlow's executor (`_XlaCompile=False`): there the recomputation waits for
  its output gradients, and the identities do not make a cluster hand out copies of a block's
  inputs. With `backward=True` the backward pass clusters layer by layer too ('backward/' and
  the part's name), for a CPU running channels_first, whose NCHW convolution gradients only
  XLA runs; a part's recomputation then shares its cluster with the part's gradient, and
  so waits for it, but the shared mode keeps less of its saving (benchmarks/README.md).
"""
import re

from tensorflow.core.framework import attr_value_pb2

from models.densenet import SCOPE

_PART = re.compile(r'(?:^|/)(%s/(?:denseblock\d+/denselayer\d+|transition\d+|stem|final|'
                   r'classifier|denseblock\d+))(?:/|$)' % SCOPE)
_BACKWARD = re.compile(r'(?:^|/)gradients(?:_\d+)?/')
KEPT_OUT = ('Identity', 'IdentityN')


def cluster_by_layer(graph, backward=False):
    """Marks the ops of `graph` (a training graph, gradients built) as above; returns (ops
    given a layer's scope, ops kept out of XLA)."""
    scoped = kept_out = 0
    for op in graph.get_operations():
        gradient = bool(_BACKWARD.search(op.name))
        if op.type in KEPT_OUT or (gradient and not backward):
            op._set_attr('_XlaCompile', attr_value_pb2.AttrValue(b=False))
            kept_out += 1
            continue
        part = _PART.search(op.name)
        scope = part.group(1) if part else op.name
        if part and gradient:
            scope = 'backward/' + scope
        op._set_attr('_XlaInternalScope', attr_value_pb2.AttrValue(s=scope.encode()))
        scoped += bool(part)
    return scoped, kept_out
