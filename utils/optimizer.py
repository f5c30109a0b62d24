"""The training graph: loss, the paper's learning-rate schedule, Nesterov SGD and float16 loss
scaling. The run loop and the Estimator model_fn both build their training graph here."""
import dataclasses

from models.compat import tf
from utils.inference import inference

INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


SCHEDULES = ('step', 'cosine')


def learning_rate(global_step, base_rate, last_step, schedule='step'):
    """The learning rate at `global_step` of a run that ends at `last_step`: 'step' is the
    paper's CIFAR schedule (the base rate, divided by 10 at 50% and again at 75% of training),
    'cosine' decays it along half a cosine to 0 at the end (Loshchilov and Hutter's SGDR
    without restarts)."""
    if schedule == 'cosine':
        return tf.identity(tf.train.cosine_decay(base_rate, global_step, last_step),
                           name='learning_rate')
    boundaries = [int(0.5 * last_step), int(0.75 * last_step)]
    values = [base_rate, base_rate * 0.1, base_rate * 0.01]
    return tf.train.piecewise_constant(global_step, boundaries, values, name='learning_rate')


def loss(logits, labels, weight_decay):
    """(cross entropy, cross entropy + weight decay on the convolution and dense kernels)."""
    cross_entropy = tf.losses.sparse_softmax_cross_entropy(labels, logits)
    kernels = [v for v in tf.trainable_variables() if v.op.name.endswith('kernel')]
    decay = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in kernels])
    return cross_entropy, cross_entropy + decay


class DynamicLossScale(object):
    """Loss scaling for float16 training: starts at 2^15, halves (down to 1) after every step with
    non-finite gradients, doubles after 2000 finite steps in a row.

    The rule and the checkpoint variables (`loss_scale`, `good_steps`) are those of TF 1.15's
    contrib ExponentialUpdateLossScaleManager, which earlier versions used: their checkpoints
    resume, and checkpoints move between the TF 1.15 and TF 2 stacks (contrib is gone in 2.x, and
    2.x's loss scale keeps its value in `current_loss_scale`).
    """

    def __init__(self):
        self.value = tf.get_variable('loss_scale', initializer=INITIAL_LOSS_SCALE,
                                     trainable=False, use_resource=True)
        self._good_steps = tf.get_variable('good_steps', initializer=0, trainable=False,
                                           use_resource=True)

    def update(self, finite):
        """The op that adjusts the scale after a step whose gradients were `finite` or not."""
        def after_finite():
            def grow():
                doubled = self.value * 2.0
                return tf.group(self.value.assign(tf.where(tf.is_finite(doubled), doubled,
                                                           self.value)),
                                self._good_steps.assign(0))
            return tf.cond(self._good_steps + 1 >= LOSS_SCALE_GROWTH_STEPS, grow,
                           lambda: self._good_steps.assign_add(1).op)

        def after_overflow():
            return tf.group(self.value.assign(tf.maximum(1.0, self.value * 0.5)),
                            self._good_steps.assign(0))
        return tf.cond(finite, after_finite, after_overflow, name='update_loss_scale')


@dataclasses.dataclass(frozen=True)
class TrainingGraph(object):
    """One training step's tensors. `train_op` applies the update only when `finite` (all
    gradients, after any all-reduce) holds; `loss_scale` is None in float32."""
    loss: tf.Tensor
    cross_entropy: tf.Tensor
    accuracy: tf.Tensor
    train_op: tf.Operation
    finite: tf.Tensor
    learning_rate: tf.Tensor
    loss_scale: object


def training_graph(images, labels, dataset, model, config, last_step, distribution):
    """The training step of `model` (a ModelConfig) on a batch of raw pixels, as `config` (a
    TrainConfig) says, with gradients averaged over `distribution`'s workers and summaries of
    its scalars. The batch-norm statistics update with every step.

    A non-finite update is never applied, so the weights stay the last good ones: in float16
    the step is skipped and the loss scale backs off; in float32 the caller decides to stop.
    """
    logits, creator = inference(images, dataset, model, True, config.data_format, config.fp16,
                                config.efficient, config.dropout_rate)
    cross_entropy, total = loss(logits, labels, config.weight_decay)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                               labels), tf.float32))
    global_step = tf.train.get_or_create_global_step()
    rate = learning_rate(global_step, config.initial_learning_rate(distribution.size), last_step,
                         config.lr_schedule)
    optimizer = distribution.optimizer(
        tf.train.MomentumOptimizer(rate, config.momentum, use_nesterov=True), config.fp16)
    scale = DynamicLossScale() if config.fp16 else None
    grads_and_vars = optimizer.compute_gradients(total * scale.value if scale else total)
    if scale:
        grads_and_vars = [(g if g is None else g / tf.cast(scale.value, g.dtype), v)
                          for g, v in grads_and_vars]
    finite = tf.reduce_all([tf.reduce_all(tf.is_finite(g)) for g, _ in grads_and_vars
                            if g is not None], name='gradients_finite')
    train_op = tf.cond(finite, lambda: optimizer.apply_gradients(
        grads_and_vars, global_step=global_step), tf.no_op, name='apply_if_finite')
    # Grouped with the step, not TF's usual `control_dependencies(update_ops)` around the
    # gradients: every op made under it gets every update as a control input, O(L^2) edges
    # (BC-250 shared: 3.3 GiB more host memory, twice the build time).
    updates = list(creator.update_ops) + ([scale.update(finite)] if scale else [])
    train_op = tf.group(train_op, *updates)
    graph = TrainingGraph(total, cross_entropy, accuracy, train_op, finite, rate,
                          scale.value if scale else None)
    for name, value in (('cross_entropy', cross_entropy), ('loss', total),
                        ('train_accuracy', accuracy), ('learning_rate', rate),
                        ('loss_scale', graph.loss_scale)):
        if value is not None:
            tf.summary.scalar(name, value)
    return graph
