"""The training loop: build the step, check the model directory, run a MonitoredTrainingSession.

The graph comes from `utils.optimizer` (as in the Estimator model_fn),
the hooks from `utils.hooks`, distribution from `utils.distribution`.
"""
import contextlib
import os
import re

from models import SCOPE, compat
from models.compat import tf
from models.xla import cluster_by_layer
from utils import distribution, hooks, optimizer, run_dir
from utils.checkpoints import check_compatible, checkpoint_step, latest_checkpoint
from utils.errors import TrainingError, first_line
from utils.log import LOG
from utils.restore import keras_init_fn

# Under --fp16 an overflowing step is skipped and the loss scale halves; this many in a row
# (the scale has long reached 1 by then) means the run itself has gone non-finite.
MAX_NONFINITE_FP16_STEPS = 50


def train(dataset, model, config, extra_hooks=()):
    """Trains `model` (a ModelConfig) on `dataset` as `config` (a TrainConfig) says, resuming
    from `config.model_dir`; returns the last global step. `extra_hooks` run on every worker."""
    dist = distribution.current()
    last_step = config.total_steps(dataset.train_size, dist.size)
    if dist.is_chief:
        run_dir.check_not_in_use(config.model_dir)
    resume = latest_checkpoint(config.model_dir, report=dist.is_chief)
    start = checkpoint_step(resume)
    if start >= last_step:
        LOG.info('%s is already trained to step %d (target %d): nothing to do',
                 config.model_dir, start, last_step)
        return start
    trained_as = run_dir.schedule(config.batch_size, dist.size, config.lr_schedule)
    if start:
        run_dir.check_schedule(config.model_dir, trained_as)
        LOG.info('resuming from %s at step %d%s', resume, start,
                 '; --init_from_keras only starts new runs' if config.init_from_keras else '')
    _start_xla(config, dist.is_chief)
    with tf.Graph().as_default() as graph, contextlib.ExitStack() as claimed:
        if config.seed is not None:
            tf.set_random_seed(config.seed)
        step = _training_graph(dataset, model, config, dist, last_step)
        if config.xla:
            cluster_by_layer(graph, backward=config.xla_backward)
        signals = hooks.StopSignals()
        guard = hooks.GuardHook(step.loss, step.finite, step.loss_scale, config.model_dir,
                                MAX_NONFINITE_FP16_STEPS if config.fp16 else 1, signals, dist)
        all_hooks = ([tf.train.StopAtStepHook(last_step=last_step), guard] + dist.hooks() +
                     list(extra_hooks))
        # Rank 0 loads the Keras weights of a new run; Horovod's broadcast hook copies them.
        init_fn = keras_init_fn(config.init_from_keras) if (
            config.init_from_keras and dist.is_chief and not start) else None
        if dist.is_chief:
            all_hooks += _chief_hooks(dataset, model, config, step, start, last_step, dist)
            if start:  # a checkpoint of another model, in a directory without config.json
                check_compatible(resume, tf.global_variables(scope=SCOPE))
            # The graph is built, so bad data and bad settings have been named: only now is
            # --model_dir written to, and by this process alone until it ends.
            claimed.enter_context(run_dir.claim(
                config.model_dir, tf.global_variables(),
                tf.get_default_graph().as_graph_def().ByteSize(), resume))
            model.save(config.model_dir)
            run_dir.record_schedule(config.model_dir, trained_as)
            LOG.info('training %s on %s: batch %d per worker, %s, %s', model.title,
                     model.data_name, config.batch_size, config.efficient,
                     'fp16' if config.fp16 else 'fp32')
        with signals.handled():
            try:
                last = _run(step.train_op, all_hooks, init_fn, config, dist, start)
            finally:  # flush and close the summary writers while the directory is ours
                tf.summary.FileWriterCache.clear()
    if guard.stopped_by:
        LOG.info('stopped by %s at step %d; checkpoint saved: %s', guard.stopped_by, last,
                 latest_checkpoint(config.model_dir, report=False))
    else:
        LOG.info('done at step %d; checkpoints in %s', last, config.model_dir)
    return last


def _start_xla(config, report):
    """XLA auto-clustering on, as --xla says; where it will not keep the recomputation's
    saving, one line says so now (`report`: this process speaks for the run)."""
    recomputes = str(config.efficient) != 'naive'
    if config.xla:
        compat.enable_auto_clustering(every_op=config.xla_backward)
        if config.xla_backward and recomputes and report:
            LOG.warning('--xla True in channels_first on a CPU: XLA compiles the backward pass '
                        'too (TensorFlow has no NCHW gradients on CPU), where recomputation '
                        '(%s) keeps less of its saving (benchmarks/README.md, "Under XLA")',
                        config.efficient)
    elif compat.auto_clustering_requested() and recomputes and report:
        LOG.warning('TF_XLA_FLAGS turns on XLA auto-clustering, which undoes most of '
                    'recomputation\'s (%s) saving (benchmarks/README.md, "Under XLA"); '
                    'add --xla True to keep it', config.efficient)


def _training_graph(dataset, model, config, dist, last_step):
    """The utils.optimizer.TrainingGraph of this worker's shard of the training data."""
    data = dataset.input_fn(True, config.batch_size, dist.size, dist.rank, seed=config.seed)
    images, labels = tf.data.make_one_shot_iterator(data).get_next()
    if config.inject_nan:
        images = _poison(images, *config.inject_nan)
    return optimizer.training_graph(images, labels, dataset, model, config, last_step, dist)


def _chief_hooks(dataset, model, config, step, start, last_step, dist):
    """Progress output and evaluation, on rank 0 only."""
    fetches = dict(loss=step.loss, accuracy=step.accuracy, lr=step.learning_rate,
                   step=tf.train.get_global_step())
    chief = [hooks.ProgressHook(fetches, start, last_step, config.batch_size * dist.size,
                                config.model_dir, config.log_every_steps)]
    if config.epochs_per_eval:
        chief.append(hooks.EvalHook(dataset, model, config, config.eval_every_steps(
            dataset.train_size, dist.size), last_step))
    return chief


def _run(train_op, all_hooks, init_fn, config, dist, step):
    """Runs `train_op` from global step `step` until a hook stops it; returns the last step.
    `init_fn(scaffold, session)`, if given, initialises a run no checkpoint restores."""
    # Relative paths in the index keep a copied or moved run directory self-contained.
    scaffold = tf.train.Scaffold(init_fn=init_fn, saver=tf.train.Saver(
        sharded=True, allow_empty=True, save_relative_paths=True))
    saver = [hooks.CheckpointSaver(config.model_dir, config.save_checkpoint_steps, scaffold)]
    global_step = tf.train.get_global_step()
    try:  # Only rank 0 writes checkpoints and summaries.
        with tf.train.MonitoredTrainingSession(
                checkpoint_dir=config.model_dir if dist.is_chief else None, hooks=all_hooks,
                chief_only_hooks=saver if dist.is_chief else None, scaffold=scaffold,
                save_checkpoint_steps=None, save_checkpoint_secs=None,
                save_summaries_steps=config.log_every_steps, log_step_count_steps=None,
                config=dist.session_config()) as sess:
            while not sess.should_stop():
                step = sess.run([train_op, global_step])[1]
    except tf.errors.ResourceExhaustedError as e:
        raise TrainingError(_out_of_memory(e, step, config))
    return step


def _out_of_memory(error, step, config):
    """One line for a step (or evaluation) that did not fit: where, the allocation that failed
    (often a small one: the straw, not the load), the CPU allocator's cap (utils/cli.py sets
    it), what needs less. Nothing of the failed step was saved."""
    found = re.search(r'OOM when allocating tensor with shape ?\[([^\]]*)\] and type (\w+) on '
                      r'\S*?(\w+:\d+) by allocator', error.message)
    if not found:
        return 'out of memory after step %d: %s' % (step, first_line(error))
    shape, dtype, device = found.groups()
    less = ['a smaller --batch_size (this run: %d)' % config.batch_size]
    if not config.efficient.shared:
        less.append('--efficient shared')
    if device.startswith('CPU') and os.environ.get('TF_CPU_BFC_MEM_LIMIT_IN_MB'):
        less.append('a higher TF_CPU_BFC_MEM_LIMIT_IN_MB (now %s)'
                    % os.environ['TF_CPU_BFC_MEM_LIMIT_IN_MB'])
    last = latest_checkpoint(config.model_dir, report=False)
    return 'out of memory after step %d on %s (allocating %s %s); try %s; %s' % (
        step, device, dtype, '[%s]' % shape if shape else 'scalar', ' or '.join(less),
        'the last checkpoint, %s, is intact' % last if last else 'no checkpoint was written')


def _poison(images, first, count):
    """Fault drill (--inject_nan FIRST[:COUNT]): batches FIRST..FIRST+COUNT-1 this process reads
    (1-based) become NaN."""
    with tf.variable_scope('inject_nan'):
        seen = tf.Variable(0, trainable=False, name='batches_seen',
                           collections=[tf.GraphKeys.LOCAL_VARIABLES])
        n = seen.assign_add(1)
    bad = tf.logical_and(n >= first, n < first + count)
    return images + tf.where(bad, float('nan'), 0.0)
