"""Training and evaluation loops: data, optimizer, hooks, checkpoints, fp16 and Horovod.

The model itself comes from `inference`, the one builder train.py, eval.py and export share.
"""
import collections
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

import models

# What a run needs besides the dataset; train.py fills it from flags (library code reads no flags).
RunConfig = collections.namedtuple('RunConfig', [
    'model', 'depth', 'growth_rate', 'data_format', 'efficient', 'fp16', 'dropout_rate',
    'batch_size', 'model_dir', 'train_epochs', 'max_steps', 'epochs_per_eval',
    'learning_rate', 'weight_decay', 'momentum', 'save_checkpoint_steps', 'log_every_steps',
    'seed', 'init_from_keras', 'mfm_transitions', 'mfm_layers'])
RunConfig.__new__.__defaults__ = (None,) * len(RunConfig._fields)

INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000


class TrainingError(Exception):
    """Training cannot go on (non-finite loss, ...); the message says why, in one line."""


def inference(images, dataset, config, training):
    """Raw NHWC float32 pixels -> (float32 logits, DenseNetCreator).

    Normalisation, layout and precision live here so that every entry point builds the same graph.
    """
    data_format = config.data_format or models.layers.default_data_format()
    x = dataset.normalize(images)
    if data_format == 'channels_first':
        x = tf.transpose(x, [0, 3, 1, 2])
    if config.fp16:
        x = tf.cast(x, tf.float16)
    creator = models.create(config.model, x, dataset.num_classes, depth=config.depth,
                            growth_rate=config.growth_rate, data_format=data_format,
                            efficient=config.efficient, dropout_rate=config.dropout_rate or 0.0,
                            training=training, mfm_transitions=config.mfm_transitions or (),
                            mfm_layers=config.mfm_layers or ())
    return creator(), creator


def steps_per_epoch(dataset, config, workers=1):
    return max(1, dataset.train_size // (config.batch_size * workers))


def total_steps(dataset, config, workers=1):
    if config.max_steps:
        return config.max_steps
    return int(math.ceil(config.train_epochs * steps_per_epoch(dataset, config, workers)))


def learning_rate(global_step, base_rate, last_step):
    """The paper's schedule: base rate, divided by 10 at 50% and again at 75% of training."""
    boundaries = [int(0.5 * last_step), int(0.75 * last_step)]
    values = [base_rate, base_rate * 0.1, base_rate * 0.01]
    return tf.train.piecewise_constant(global_step, boundaries, values, name='learning_rate')


def _loss(logits, labels, weight_decay):
    cross_entropy = tf.losses.sparse_softmax_cross_entropy(labels, logits)
    kernels = [v for v in tf.trainable_variables() if v.op.name.endswith('kernel')]
    decay = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in kernels])
    return cross_entropy, cross_entropy + decay


def _top_k_correct(logits, labels, k):
    return tf.reduce_sum(tf.cast(tf.nn.in_top_k(logits, labels, k), tf.float32))


def train(dataset, config, log=print, on_rank0_start=None, extra_hooks=()):
    """Trains until `total_steps`, resuming from `config.model_dir`; returns the last step.

    `on_rank0_start()` runs once on the chief before training (e.g. to save the run's config);
    `extra_hooks` are more SessionRunHooks for every worker.
    """
    import horovod.tensorflow as hvd
    hvd.init()  # Horovod: one process per worker, or a single one without horovodrun.
    rank0 = hvd.rank() == 0
    if rank0 and on_rank0_start:
        on_rank0_start()
    last_step = total_steps(dataset, config, hvd.size())
    start = _checkpoint_step(config.model_dir)
    if start >= last_step:
        if rank0:
            log('%s is already trained to step %d (target %d): nothing to do' % (
                config.model_dir, start, last_step))
        return start

    if start and config.init_from_keras and rank0:
        log('resuming from the checkpoint at step %d; --init_from_keras only starts new runs'
            % start)

    tf.reset_default_graph()
    if config.seed is not None:
        tf.set_random_seed(config.seed)
    global_step = tf.train.get_or_create_global_step()
    # Horovod: each worker reads its own shard of the training data.
    train_data = dataset.input_fn(True, config.batch_size, hvd.size(), hvd.rank(),
                                  seed=config.seed)
    images, labels = tf.data.make_one_shot_iterator(train_data).get_next()
    logits, model = inference(images, dataset, config, training=True)
    cross_entropy, loss = _loss(logits, labels, config.weight_decay)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32),
                                               labels), tf.float32))
    # Horovod: the learning rate grows with the number of workers (the global batch).
    lr = learning_rate(global_step, config.learning_rate * hvd.size(), last_step)
    optimizer = tf.train.MomentumOptimizer(lr, config.momentum, use_nesterov=True)
    # Horovod: average gradients across workers (in float16 on the wire under --fp16).
    compression = hvd.Compression.fp16 if config.fp16 else hvd.Compression.none
    optimizer = hvd.DistributedOptimizer(_StableGradientNames(optimizer), compression=compression)
    loss_scale = None
    if config.fp16:
        manager = tf.contrib.mixed_precision.ExponentialUpdateLossScaleManager(
            INITIAL_LOSS_SCALE, LOSS_SCALE_GROWTH_STEPS, decr_every_n_nan_or_inf=1,
            decr_ratio=0.5)
        optimizer = tf.contrib.mixed_precision.LossScaleOptimizer(optimizer, manager)
        loss_scale = manager.get_loss_scale()
    with tf.control_dependencies(model.update_ops):
        train_op = optimizer.minimize(loss, global_step=global_step)

    tf.summary.scalar('cross_entropy', cross_entropy)
    tf.summary.scalar('loss', loss)
    tf.summary.scalar('train_accuracy', accuracy)
    tf.summary.scalar('learning_rate', lr)
    if loss_scale is not None:
        tf.summary.scalar('loss_scale', loss_scale)

    eval_every = max(1, int(config.epochs_per_eval * steps_per_epoch(dataset, config,
                                                                     hvd.size())))
    fetches = dict(loss=loss, accuracy=accuracy, lr=lr, step=global_step)
    hooks = [
        tf.train.StopAtStepHook(last_step=last_step),
        # Horovod: start every worker from rank 0's (possibly restored) variables.
        hvd.BroadcastGlobalVariablesHook(0),
        _NonFiniteLossHook(loss, config.model_dir),
    ] + list(extra_hooks)
    if rank0:
        hooks.append(_ProgressHook(fetches, start, last_step, config.batch_size * hvd.size(),
                                   config.model_dir, config.log_every_steps, log))
        if config.epochs_per_eval:
            hooks.append(_EvalHook(dataset, config, eval_every, last_step, log))
    session_config = tf.ConfigProto(allow_soft_placement=True)
    if tf.test.is_gpu_available():  # Horovod: one GPU per process.
        session_config.gpu_options.visible_device_list = str(hvd.local_rank())
    # Horovod: rank 0 loads the Keras weights of a new run; the broadcast hook copies them.
    init_fn = _keras_init_fn(config.init_from_keras, log) if (
        config.init_from_keras and rank0) else None
    step = start
    # Horovod: only rank 0 writes checkpoints and summaries.
    with tf.train.MonitoredTrainingSession(
            checkpoint_dir=config.model_dir if rank0 else None, hooks=hooks,
            scaffold=tf.train.Scaffold(init_fn=init_fn),
            save_checkpoint_steps=config.save_checkpoint_steps if rank0 else None,
            save_checkpoint_secs=None, save_summaries_steps=config.log_every_steps,
            log_step_count_steps=None, config=session_config) as sess:
        while not sess.should_stop():
            step = sess.run([train_op, global_step])[1]
    return step


def _keras_init_fn(path, log):
    """A Scaffold init_fn (it runs only when no checkpoint was restored) that loads a Keras
    DenseNet .h5; a classifier of another class count keeps its fresh initialisation."""
    from models.keras_import import load_keras_weights

    def init_fn(scaffold, sess):
        skipped = load_keras_weights(sess, path, tf.global_variables(), new_classifier=True)
        log('initialised from %s%s' % (path, ' (new classifier: %s)' % ', '.join(
            '%s %s' % (v.op.name, v.shape.as_list()) for v in skipped) if skipped else ''))
    return init_fn


def restorer(checkpoint=None, keras_weights=None):
    """fn(sess, variables) filling a model's variables from a checkpoint, or else from a Keras
    DenseNet .h5; either is checked against the graph first (one-line error if it does not fit)."""
    from models.keras_import import load_keras_weights
    from utils.checkpoints import check_compatible

    def restore(sess, variables):
        if checkpoint:
            check_compatible(checkpoint, variables)
            tf.train.Saver(variables).restore(sess, checkpoint)
        else:
            sess.run(tf.variables_initializer(variables))
            load_keras_weights(sess, keras_weights, variables)
    return restore


class _StableGradientNames(tf.train.Optimizer):
    """Names each gradient after its variable.

    Horovod pairs the tensors it reduces across workers by name, and recompute_grad builds its
    gradients in an order (from a set of variables) that differs from process to process; with
    the default names the workers wait for each other's tensors forever.
    """

    def __init__(self, optimizer):
        super(_StableGradientNames, self).__init__(False, optimizer.get_name())
        self._optimizer = optimizer

    def compute_gradients(self, *args, **kwargs):
        return [(g if g is None else tf.identity(g, name='gradient/' + v.op.name), v)
                for g, v in self._optimizer.compute_gradients(*args, **kwargs)]

    def apply_gradients(self, *args, **kwargs):
        return self._optimizer.apply_gradients(*args, **kwargs)

    def get_slot(self, *args, **kwargs):
        return self._optimizer.get_slot(*args, **kwargs)

    def get_slot_names(self, *args, **kwargs):
        return self._optimizer.get_slot_names(*args, **kwargs)

    def variables(self):
        return self._optimizer.variables()


def _checkpoint_step(model_dir):
    checkpoint = tf.train.latest_checkpoint(model_dir) if model_dir else None
    if not checkpoint:
        return 0
    return int(tf.train.load_variable(checkpoint, 'global_step'))


class _NonFiniteLossHook(tf.train.SessionRunHook):
    """Stops training on a non-finite loss before anything is applied or saved from it."""

    def __init__(self, loss, model_dir):
        self._loss, self._model_dir = loss, model_dir

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._loss)

    def after_run(self, run_context, run_values):
        if not np.isfinite(run_values.results):
            step = run_context.session.run(tf.train.get_global_step())
            raise TrainingError('loss is %s at step %d; stopping. Last checkpoint: %s' % (
                run_values.results, step, tf.train.latest_checkpoint(self._model_dir)))


class _ProgressHook(tf.train.SessionRunHook):
    """A tqdm bar with step, loss, accuracy, learning rate and images/s; images/s to TensorBoard."""

    def __init__(self, fetches, start, last_step, global_batch, model_dir, every, log):
        self._fetches, self._start, self._last = fetches, start, last_step
        self._batch, self._dir, self._every, self._log = global_batch, model_dir, every or 50, log

    def begin(self):
        from tqdm import tqdm
        self._bar = tqdm(total=self._last, initial=self._start, unit='step', dynamic_ncols=True,
                         file=sys.stdout, mininterval=1.0, disable=None)
        self._writer = tf.summary.FileWriterCache.get(self._dir)
        self._time, self._step = time.time(), self._start

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        r = run_values.results
        step = int(run_context.session.run(self._fetches['step']))
        self._bar.update(step - self._bar.n)
        if step % self._every == 0 or step >= self._last:
            now = time.time()
            rate = (step - self._step) * self._batch / max(now - self._time, 1e-9)
            self._time, self._step = now, step
            self._bar.set_postfix(loss='%.4f' % r['loss'], acc='%.3f' % r['accuracy'],
                                  lr='%.3g' % r['lr'], img_s='%.0f' % rate, refresh=False)
            if self._bar.disable:
                self._log('step %d/%d loss %.4f acc %.3f lr %.3g %.0f img/s' % (
                    step, self._last, r['loss'], r['accuracy'], r['lr'], rate))
            self._writer.add_summary(tf.Summary(value=[
                tf.Summary.Value(tag='images_per_sec', simple_value=rate)]), step)

    def end(self, session):
        self._bar.close()


class _EvalHook(tf.train.SessionRunHook):
    """Evaluates on the test split every `every` steps and at the end, in the training session,
    with an evaluation tower that shares the training variables."""

    def __init__(self, dataset, config, every, last_step, log):
        self._dataset, self._config, self._every, self._last, self._log = (
            dataset, config, every, last_step, log)

    def begin(self):
        data = self._dataset.input_fn(False, self._config.batch_size)
        self._iterator = tf.data.make_initializable_iterator(data)
        self._metrics = _eval_metrics(self._iterator, self._dataset, self._config)
        self._writer = tf.summary.FileWriterCache.get(self._config.model_dir)
        self._done = -1

    def after_run(self, run_context, run_values):
        step = run_context.session.run(tf.train.get_global_step())
        if step != self._done and (step % self._every == 0 or step >= self._last):
            self._done = step
            results = _run_eval(run_context.session, self._iterator, self._metrics)
            self._log('step %d: %s' % (step, format_metrics(results)))
            self._writer.add_summary(tf.Summary(value=[
                tf.Summary.Value(tag='eval/' + k, simple_value=v) for k, v in results.items()
                if k != 'examples']), step)
            self._writer.flush()


def _eval_metrics(iterator, dataset, config):
    images, labels = iterator.get_next()
    logits, _ = inference(images, dataset, config, training=False)
    loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    metrics = dict(loss=loss, top1=_top_k_correct(logits, labels, 1), examples=tf.size(labels))
    if dataset.num_classes > 10:
        metrics['top5'] = _top_k_correct(logits, labels, 5)
    return metrics


def _run_eval(sess, iterator, metrics):
    sess.run(iterator.initializer)
    totals = collections.Counter()
    while True:
        try:
            for k, v in sess.run(metrics).items():
                totals[k] += float(v)
        except tf.errors.OutOfRangeError:
            break
    n = max(totals['examples'], 1)
    results = dict((k, totals[k] / n) for k in metrics if k != 'examples')
    results['examples'] = int(totals['examples'])
    return results


def format_metrics(results):
    parts = ['loss %.4f' % results['loss'], 'top-1 %.2f%%' % (100 * results['top1'])]
    if 'top5' in results:
        parts.append('top-5 %.2f%%' % (100 * results['top5']))
    return ', '.join(parts) + ' on %d test images' % results['examples']


def evaluate(dataset, config, checkpoint=None):
    """Evaluates the whole test split with `checkpoint`'s weights (or, without one, those of
    the Keras file `config.init_from_keras`) in the inference graph."""
    with tf.Graph().as_default():
        iterator = tf.data.make_initializable_iterator(
            dataset.input_fn(False, config.batch_size))
        metrics = _eval_metrics(iterator, dataset, config)
        with tf.Session() as sess:
            restorer(checkpoint, config.init_from_keras)(sess, tf.global_variables())
            results = _run_eval(sess, iterator, metrics)
    results['checkpoint'] = checkpoint or config.init_from_keras
    results['global_step'] = int(tf.train.load_variable(checkpoint, 'global_step')
                                 if checkpoint else 0)
    return results
