"""Recomputation: a function's intermediate results are not kept for the backward pass but
computed again there, just before they are needed. This is what makes `efficient=True` linear in
depth (see `DenseNetCreator._dense_layer` for what the recomputed function must contain).

TF 1.15 recomputes with `tf.contrib.layers.recompute_grad` (the product's documented method);
TF 2.x has no contrib, and its own `tf.recompute_grad` saves no memory in graph mode, so there
`_recompute_grad` below does the same with `tf.custom_gradient`. `models.compat` says which.
"""
from models import compat
from models.compat import tf


def recompute(body, num_inputs):
    """`body(inputs, is_recomputing)`, a function of a list of `num_inputs` tensors, as a
    function of those tensors whose intermediate results are not kept for the backward pass
    but recomputed there, with `is_recomputing=True` (batch norm then leaves its moving
    averages alone, so that they update once per step).

    contrib's `recompute_grad` tells a function it is being recomputed only if `is_recomputing`
    is among its named positional parameters, which a function taking `*inputs` has not: the
    wrapper declares a fixed signature `(x0, ..., xN-1, is_recomputing=False)` so that it does.
    """
    contrib_recompute_grad = compat.contrib_recompute_grad()
    if contrib_recompute_grad is None:
        return lambda *inputs: _recompute_grad(body, inputs)
    from tensorflow.python.util import tf_decorator, tf_inspect

    def wrapper(*inputs, **kwargs):
        return body(list(inputs), kwargs.get('is_recomputing', False))

    names = ['x%d' % i for i in range(num_inputs)] + ['is_recomputing']
    spec = tf_inspect.ArgSpec(args=names, varargs=None, keywords=None, defaults=(False,))
    tf_decorator.make_decorator(body, wrapper, decorator_name='recompute',
                                decorator_argspec=spec)
    return contrib_recompute_grad(wrapper)


def _recompute_grad(body, inputs):
    """`tf.contrib.layers.recompute_grad`'s method, with `tf.custom_gradient`.

    The gradient function copies the inputs (identities), then calls `body` again under a control
    dependency on the output gradients, so that the recomputation cannot run before the
    backward pass reaches it; it re-enters the forward pass's variable scope with reuse, and
    differentiates the recomputed outputs. (`tf.recompute_grad` of 2.x holds the recomputation
    back with a `where(x == x, 0, nan)` data dependency that graph mode folds into a constant:
    every recomputation runs early and stays alive, and nothing is saved.)
    """
    scope = tf.get_variable_scope()

    @tf.custom_gradient
    def forward(*args):
        outputs = body(list(args), False)

        def backward(*output_grads, variables=None):
            variables = list(variables or [])
            copies = [tf.identity(x) for x in args]
            graph = tf.get_default_graph()
            first = len(graph.get_operations())
            with tf.control_dependencies([g for g in output_grads if g is not None]):
                with tf.variable_scope(scope, reuse=True):
                    recomputed = body(copies, True)
            recomputed = list(recomputed) if isinstance(recomputed, (list, tuple)) else [
                recomputed]
            reads = _reads(graph.get_operations()[first:], variables)
            grads = tf.gradients(recomputed, copies + sum(reads, []), list(output_grads))
            return grads[:len(copies)], _per_variable(grads[len(copies):], reads)

        # custom_gradient passes `variables` (the trainable ones the forward pass read, sorted
        # by name) to a function whose signature names it, and only if there are any.
        return outputs, backward

    return forward(*inputs)


def _reads(ops, variables):
    """For each of `variables`, its reads among `ops` (the recomputation's), or the variable
    itself if it has none there.

    The recomputation is differentiated by these reads, not by the variables: `tf.gradients`
    first walks every op reachable from its `xs`, and from a variable that is every later use of
    it, the forward pass and everything downstream of it. Per layer that made building the graph
    quadratic in depth (BC-502: 251 s).
    """
    by_handle = {}
    for op in ops:
        if op.type == 'ReadVariableOp':
            by_handle.setdefault(op.inputs[0].ref(), []).append(op.outputs[0])
    return [by_handle.get(v.handle.ref(), [v]) for v in variables]


def _per_variable(grads, reads):
    """The gradient of each variable: the sum over its reads (None if none is connected)."""
    result = []
    for variable_reads in reads:
        mine = [g for g in grads[:len(variable_reads)] if g is not None]
        grads = grads[len(variable_reads):]
        result.append(None if not mine else mine[0] if len(mine) == 1 else tf.add_n(mine))
    return result


FILTER_GRADIENT_FIRST = 'DenseNetFilterGradientFirstConv2D'


def filter_gradient_first(body):
    """`body` whose convolutions, when differentiated, compute their filter gradient before their
    input gradient.

    Both need the layer's recomputed input, but only the input gradient starts the chain that
    goes on backwards (ReLU, batch norm, the previous convolution), each link allocating a new
    feature-map gradient. Left to the executor, that chain often ran first, and the filter
    gradient (whose kernel takes a large working buffer on a CPU, as cuDNN's workspace does on a
    GPU) ran last, on top of all of it: BC-40's peak was set there. One control edge per
    convolution keeps that order on every stack (`models.compat.conv2d_gradient`, TensorFlow's
    own gradient, computes both).
    """
    def ordered(inputs, is_recomputing):
        with tf.get_default_graph().gradient_override_map({'Conv2D': FILTER_GRADIENT_FIRST}):
            return body(inputs, is_recomputing)
    return ordered


@tf.RegisterGradient(FILTER_GRADIENT_FIRST)
def _filter_gradient_first(op, grad):
    input_grad, filter_grad = compat.conv2d_gradient()(op, grad)
    input_grad.op._add_control_input(filter_grad.op)
    return input_grad, filter_grad
