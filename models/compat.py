"""What differs between TensorFlow 1.15 and TensorFlow 2.x run in tf.compat.v1 graph mode.

Every other module takes `tf` from here and never looks at the version: `tf` is the v1 API on
both stacks (`tensorflow.compat.v1`, with the v2 behaviours switched off on 2.x). The rest is the
recomputation wrapper (`tf.contrib` is gone on 2.x, and 2.x's own `tf.recompute_grad` saves no
memory in graph mode), a GPU query that creates no device, and silencing the noise 2.x makes on
import and for every `tf.layers` call.
"""
import warnings

import tensorflow as _tensorflow
import tensorflow.compat.v1 as tf

VERSION = _tensorflow.__version__
TF2 = int(VERSION.split('.')[0]) >= 2

if TF2:
    _verbosity = tf.logging.get_verbosity()
    tf.logging.set_verbosity(tf.logging.ERROR)  # disable_v2_behavior logs a deprecation notice
    tf.disable_v2_behavior()
    tf.logging.set_verbosity(_verbosity)
    # Keras 2's tf.compat.v1.layers warn on every call that they are deprecated; they are what
    # the product is built on (see README, "Supported stacks").
    warnings.filterwarnings('ignore', message=r'`tf\.layers\.\w+` is deprecated',
                            category=UserWarning)


def gpu_available():
    """Whether this process sees a GPU, without creating a device (and so without taking GPU
    memory, unlike `tf.test.is_gpu_available`)."""
    return bool(tf.config.experimental.list_physical_devices('GPU'))


def recompute(body, num_inputs):
    """`body(inputs, is_recomputing)`, a function of a list of `num_inputs` tensors, as a
    function of those tensors whose intermediate results are not kept for the backward pass
    but recomputed there, with `is_recomputing=True` (batch norm then leaves its moving
    averages alone, so that they update once per step).

    TF 1.15: `tf.contrib.layers.recompute_grad`. It tells a function it is being recomputed
    only if `is_recomputing` is among its named positional parameters, which a function taking
    `*inputs` has not: the wrapper declares a fixed signature `(x0, ..., xN-1,
    is_recomputing=False)` so that it does. TF 2.x: `_recompute_grad` below, the same method.
    """
    if TF2:
        return lambda *inputs: _recompute_grad(body, inputs)
    from tensorflow.contrib.layers import recompute_grad
    from tensorflow.python.util import tf_decorator, tf_inspect

    def wrapper(*inputs, **kwargs):
        return body(list(inputs), kwargs.get('is_recomputing', False))

    names = ['x%d' % i for i in range(num_inputs)] + ['is_recomputing']
    spec = tf_inspect.ArgSpec(args=names, varargs=None, keywords=None, defaults=(False,))
    tf_decorator.make_decorator(body, wrapper, decorator_name='recompute',
                                decorator_argspec=spec)
    return recompute_grad(wrapper)


def _recompute_grad(body, inputs):
    """TF 2.x's recomputation, as `tf.contrib.layers.recompute_grad` does it in 1.15.

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
            with tf.control_dependencies([g for g in output_grads if g is not None]):
                with tf.variable_scope(scope, reuse=True):
                    recomputed = body(copies, True)
            recomputed = list(recomputed) if isinstance(recomputed, (list, tuple)) else [
                recomputed]
            grads = tf.gradients(recomputed, copies + variables, list(output_grads))
            return grads[:len(copies)], grads[len(copies):]

        # custom_gradient passes `variables` (the trainable ones the forward pass read, sorted
        # by name) to a function whose signature names it, and only if there are any.
        return outputs, backward

    return forward(*inputs)
