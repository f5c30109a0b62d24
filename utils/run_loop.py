"""Training and evaluation loops: data, optimizer, hooks, checkpoints, fp16 and Horovod.

The model itself comes from `inference`, the one builder train.py, eval.py and export share.
"""
import collections
import contextlib
import math
import os
import shutil
import signal
import sys
import threading
import time

import numpy as np
import tensorflow as tf

import models

# What a run needs besides the dataset; train.py fills it from flags (library code reads no flags).
RunConfig = collections.namedtuple('RunConfig', [
    'model', 'depth', 'growth_rate', 'data_format', 'efficient', 'fp16', 'dropout_rate',
    'batch_size', 'model_dir', 'train_epochs', 'max_steps', 'epochs_per_eval',
    'learning_rate', 'weight_decay', 'momentum', 'save_checkpoint_steps', 'log_every_steps',
    'seed', 'init_from_keras', 'mfm_transitions', 'mfm_layers', 'inject_nan'])
RunConfig.__new__.__defaults__ = (None,) * len(RunConfig._fields)

INITIAL_LOSS_SCALE = 2.0 ** 15
LOSS_SCALE_GROWTH_STEPS = 2000
# Under --fp16 an overflowing step is skipped and the loss scale halves; this many in a row
# (the scale has long reached 1 by then) means the run itself has gone non-finite.
MAX_NONFINITE_FP16_STEPS = 50
# Horovod's Gloo timeout: how long a worker waits for a peer that is gone (set unless given).
GLOO_TIMEOUT_SECONDS = 60


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
    os.environ.setdefault('HOROVOD_GLOO_TIMEOUT_SECONDS', str(GLOO_TIMEOUT_SECONDS))
    import horovod.tensorflow as hvd
    hvd.init()  # Horovod: one process per worker, or a single one without horovodrun.
    rank0 = hvd.rank() == 0
    last_step = total_steps(dataset, config, hvd.size())
    start = _checkpoint_step(config.model_dir)
    if start >= last_step:
        if rank0:
            log('%s is already trained to step %d (target %d): nothing to do' % (
                config.model_dir, start, last_step))
        return start

    if start and rank0:
        log('resuming from %s at step %d%s' % (
            tf.train.latest_checkpoint(config.model_dir), start,
            '; --init_from_keras only starts new runs' if config.init_from_keras else ''))

    tf.reset_default_graph()
    if config.seed is not None:
        tf.set_random_seed(config.seed)
    global_step = tf.train.get_or_create_global_step()
    # Horovod: each worker reads its own shard of the training data.
    train_data = dataset.input_fn(True, config.batch_size, hvd.size(), hvd.rank(),
                                  seed=config.seed)
    images, labels = tf.data.make_one_shot_iterator(train_data).get_next()
    if config.inject_nan:
        images = _poison(images, *config.inject_nan)
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
        grads_and_vars = optimizer.compute_gradients(loss)
        # After Horovod's allreduce: every worker sees the same verdict at the same step.
        finite = tf.reduce_all([tf.reduce_all(tf.is_finite(g)) for g, _ in grads_and_vars
                                if g is not None], name='gradients_finite')
        if config.fp16:  # the LossScaleOptimizer skips non-finite steps and backs off itself
            train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
        else:  # never apply a non-finite update: the weights in memory stay the last good ones
            train_op = tf.cond(finite, lambda: optimizer.apply_gradients(
                grads_and_vars, global_step=global_step), tf.no_op, name='apply_if_finite')

    tf.summary.scalar('cross_entropy', cross_entropy)
    tf.summary.scalar('loss', loss)
    tf.summary.scalar('train_accuracy', accuracy)
    tf.summary.scalar('learning_rate', lr)
    if loss_scale is not None:
        tf.summary.scalar('loss_scale', loss_scale)

    eval_every = max(1, int(config.epochs_per_eval * steps_per_epoch(dataset, config,
                                                                     hvd.size())))
    fetches = dict(loss=loss, accuracy=accuracy, lr=lr, step=global_step)
    # Horovod: a stop request (signal) or a non-finite loss on any worker, summed over workers
    # in the step itself, stops all of them after the same step.
    stop_requested = tf.placeholder_with_default(0.0, [], name='stop_requested')
    trouble = hvd.allreduce(tf.stack([stop_requested, 1.0 - tf.cast(
        tf.logical_and(finite, tf.reduce_all(tf.is_finite(loss))), tf.float32)]),
        op=hvd.Sum, name='stop_flags')
    guard = _GuardHook(trouble, stop_requested, loss, loss_scale, config.model_dir,
                       MAX_NONFINITE_FP16_STEPS if config.fp16 else 1, log if rank0 else None)
    hooks = [
        tf.train.StopAtStepHook(last_step=last_step),
        # Horovod: start every worker from rank 0's (possibly restored) variables.
        hvd.BroadcastGlobalVariablesHook(0),
        guard,
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
    scaffold = tf.train.Scaffold(init_fn=init_fn)
    if rank0:  # the graph is built, so bad data has been named: now model_dir may be written
        probe_model_dir(config.model_dir)
        check_free_space(config.model_dir, tf.global_variables())
        if on_rank0_start:
            on_rank0_start()
    step = start
    # Horovod: only rank 0 writes checkpoints and summaries.
    with guard.signals_handled(), tf.train.MonitoredTrainingSession(
            checkpoint_dir=config.model_dir if rank0 else None, hooks=hooks,
            chief_only_hooks=[_CheckpointSaver(config.model_dir, config.save_checkpoint_steps,
                                               scaffold)] if rank0 else None,
            scaffold=scaffold, save_checkpoint_steps=None, save_checkpoint_secs=None,
            save_summaries_steps=config.log_every_steps, log_step_count_steps=None,
            config=session_config) as sess:
        while not sess.should_stop():
            step = sess.run([train_op, global_step])[1]
    tf.summary.FileWriterCache.clear()  # flushes and closes the summary writers
    if rank0:
        if guard.signal_name:
            log('stopped by %s at step %d; checkpoint saved: %s' % (
                guard.signal_name, step, tf.train.latest_checkpoint(config.model_dir)))
        else:
            log('done at step %d; checkpoints in %s' % (step, config.model_dir))
    return step


def probe_model_dir(model_dir):
    """Creates `model_dir` and writes, syncs and removes a file there, so that an unwritable
    directory fails before training rather than at the first checkpoint."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        probe = os.path.join(model_dir, '.write_probe.%d' % os.getpid())
        with open(probe, 'wb') as f:
            f.write(b'\0' * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise TrainingError('cannot write to --model_dir %s: %s' % (
            model_dir, e.strerror or e))


def check_free_space(model_dir, variables):
    """TrainingError unless `model_dir`'s disk holds two more checkpoints of `variables`
    (a new one is written in full before the oldest is deleted)."""
    need = 2 * sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in variables)
    free = shutil.disk_usage(model_dir).free
    if free < need:
        raise TrainingError('%s: %.1f MiB free, a checkpoint of this model needs %.1f MiB '
                            '(two while one is replaced)' % (model_dir, free / 2.0 ** 20,
                                                               need / 2.0 ** 20))


def _poison(images, first, count):
    """Testing aid (--inject_nan FIRST[:COUNT]): batches FIRST..FIRST+COUNT-1 this process reads
    (1-based) become NaN."""
    with tf.variable_scope('inject_nan'):
        seen = tf.Variable(0, trainable=False, name='batches_seen',
                           collections=[tf.GraphKeys.LOCAL_VARIABLES])
        n = seen.assign_add(1)
    bad = tf.logical_and(n >= first, n < first + count)
    return images + tf.where(bad, float('nan'), 0.0)


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


class _GuardHook(tf.train.SessionRunHook):
    """Stops training cleanly on SIGTERM/SIGINT and with an error on non-finite steps.

    A signal lets the step finish; the summed stop flag then stops every worker after that same
    step, and the checkpoint saver writes the final checkpoint. A second signal exits at once.
    Non-finite steps were not applied (see train); after `patience` in a row (1 in float32) the
    run stops with TrainingError, which skips the final save, so the last checkpoint is intact.
    """

    def __init__(self, flags, stop_requested, loss, loss_scale, model_dir, patience, log):
        self._flags, self._stop_requested, self._loss = flags, stop_requested, loss
        self._loss_scale, self._dir, self._patience, self._log = (
            loss_scale, model_dir, patience, log)
        self._nonfinite, self._signal, self._peer_stopped = 0, None, False

    @property
    def signal_name(self):
        """What stopped the run early: 'SIGTERM', 'SIGINT', 'another worker's signal' or None."""
        if self._signal:
            return signal.Signals(self._signal).name
        return "another worker's signal" if self._peer_stopped else None

    def _handle(self, signum, frame):
        if self._signal:  # the second one
            os._exit(128 + signum)
        self._signal = signum
        if self._log:
            self._log('\n%s: stopping after this step and saving a checkpoint (again to exit '
                      'at once)' % signal.Signals(signum).name)

    @contextlib.contextmanager
    def signals_handled(self):
        """A context in which SIGTERM and SIGINT request a clean stop (main thread only)."""
        old = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                old[signum] = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            for signum, handler in old.items():
                signal.signal(signum, handler)

    def before_run(self, run_context):
        fetches = dict(flags=self._flags, loss=self._loss, step=tf.train.get_global_step())
        if self._loss_scale is not None:
            fetches['loss_scale'] = self._loss_scale
        return tf.train.SessionRunArgs(
            fetches, feed_dict={self._stop_requested: 1.0 if self._signal else 0.0})

    def after_run(self, run_context, run_values):
        r = run_values.results
        stop, nonfinite = r['flags']
        self._nonfinite = self._nonfinite + 1 if nonfinite else 0
        if self._nonfinite >= self._patience:
            raise TrainingError(
                '%s at step %d%s; stopping without applying it. The last checkpoint, %s, is '
                'intact' % ('loss is %s' % r['loss'] if not np.isfinite(r['loss']) else
                            'non-finite gradients', r['step'] + 1,
                            ' (%d steps in a row; loss scale down to %g)' % (
                                self._nonfinite, r['loss_scale']) if self._patience > 1 else '',
                            tf.train.latest_checkpoint(self._dir) if self._dir else None))
        if stop:
            self._peer_stopped = self._signal is None
            run_context.request_stop()


class _CheckpointSaver(tf.train.CheckpointSaverHook):
    """The standard saver (every `steps` and at the end) whose failures stop training with a
    one-line TrainingError instead of a traceback, or of training on without checkpoints."""

    def __init__(self, model_dir, steps, scaffold):
        super(_CheckpointSaver, self).__init__(model_dir, save_steps=steps, scaffold=scaffold)

    def _save(self, session, step):
        try:
            return super(_CheckpointSaver, self)._save(session, step)
        except (tf.errors.OpError, OSError, ValueError) as e:
            message = getattr(e, 'message', None) or str(e)
            raise TrainingError('could not write the checkpoint at step %d to %s (%s); '
                                'stopping. Last complete checkpoint: %s' % (
                                    step, self._checkpoint_dir, message.splitlines()[0],
                                    tf.train.latest_checkpoint(self._checkpoint_dir)))


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
