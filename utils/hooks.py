"""The SessionRunHooks of the training loop: a clean stop on signals and on non-finite steps,
a checkpoint saver whose failures stop training, progress output, and periodic evaluation."""
import contextlib
import os
import shutil
import signal
import sys
import threading
import time

import numpy as np

from models.compat import tf
from utils import evaluation
from utils.checkpoints import PREFIX, latest_checkpoint
from utils.errors import TrainingError, first_line
from utils.log import LOG


class StopSignals(object):
    """SIGTERM and SIGINT request a clean stop (the step in flight finishes); a second one
    exits at once, whenever it arrives.

    Python runs a signal handler only between bytecodes of the main thread, so during a long
    `session.run` two signals would reach it as one. The C-level handler also writes each
    signal's number to a wakeup pipe, byte by byte: a thread counts them as they come.
    """

    def __init__(self):
        self.signum = None

    @property
    def name(self):
        return signal.Signals(self.signum).name if self.signum else None

    def _count(self, read_fd):
        while True:
            received = os.read(read_fd, 64)
            for signum in received:
                if not signum:  # our own "done" byte
                    return
                if self.signum:  # the second one
                    os._exit(128 + signum)
                self.signum = signum
                LOG.info('\n%s: stopping after this step and saving a checkpoint (again to '
                         'exit at once)', self.name)

    @contextlib.contextmanager
    def handled(self):
        """A context in which the signals request a stop (main thread only: elsewhere Python
        cannot install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        counter = threading.Thread(target=self._count, args=(read_fd,), daemon=True,
                                   name='stop-signals')
        counter.start()
        old = dict((signum, signal.signal(signum, lambda *args: None))
                   for signum in (signal.SIGTERM, signal.SIGINT))
        old_wakeup = signal.set_wakeup_fd(write_fd)
        try:
            yield self
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old.items():
                signal.signal(signum, handler)
            os.write(write_fd, b'\0')
            counter.join()
            os.close(read_fd)
            os.close(write_fd)


class GuardHook(tf.train.SessionRunHook):
    """Stops every worker after the same step when one was signalled, and stops training with
    a TrainingError after `patience` non-finite steps in a row (1 in float32).

    Each step sums a [stop requested, not finite] flag over the workers (`distribution.sum`),
    so all of them see the same verdict. Non-finite steps were not applied (see
    `utils.optimizer.training_graph`), and a TrainingError skips the final save, so the last
    checkpoint is intact.
    """

    def __init__(self, loss, finite, loss_scale, model_dir, patience, signals, distribution):
        self._loss, self._loss_scale, self._dir = loss, loss_scale, model_dir
        self._patience, self._signals = patience, signals
        self._stop_requested = tf.placeholder_with_default(0.0, [], name='stop_requested')
        ok = tf.logical_and(finite, tf.reduce_all(tf.is_finite(loss)))
        self._flags = distribution.sum(tf.stack([self._stop_requested,
                                                 1.0 - tf.cast(ok, tf.float32)]), 'stop_flags')
        self._nonfinite, self._peer_stopped = 0, False

    @property
    def stopped_by(self):
        """What stopped the run early: 'SIGTERM', 'SIGINT', 'another worker's signal' or None."""
        return self._signals.name or ("another worker's signal" if self._peer_stopped else None)

    def before_run(self, run_context):
        fetches = dict(flags=self._flags, loss=self._loss, step=tf.train.get_global_step())
        if self._loss_scale is not None:
            fetches['loss_scale'] = self._loss_scale
        return tf.train.SessionRunArgs(
            fetches, feed_dict={self._stop_requested: 1.0 if self._signals.signum else 0.0})

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
                            latest_checkpoint(self._dir, report=False)))
        if stop:
            self._peer_stopped = self._signals.signum is None
            run_context.request_stop()


class CheckpointSaver(tf.train.CheckpointSaverHook):
    """The standard saver (every `steps` and at the end) whose failures stop training with a
    one-line TrainingError instead of a traceback, or of training on without checkpoints; and
    which writes no graph.pbtxt, a text copy of the graph: for the deep graphs (hundreds of
    thousands of ops) Python's protobuf text format takes minutes and gigabytes, and
    TensorBoard reads the graph from the events file."""

    def __init__(self, model_dir, steps, scaffold):
        super(CheckpointSaver, self).__init__(model_dir, save_steps=steps, scaffold=scaffold)

    def after_create_session(self, session, coord):
        # The standard hook's, but for graph.pbtxt (TF 1.15 has no save_graph_def=False).
        global_step = session.run(self._global_step_tensor)
        graph = tf.get_default_graph()
        saver = self._get_saver()
        self._summary_writer.add_graph(graph)
        self._summary_writer.add_meta_graph(tf.train.export_meta_graph(
            graph_def=graph.as_graph_def(add_shapes=True),
            saver_def=saver.saver_def if saver else None))
        self._save(session, global_step)  # the state at `global_step`
        self._timer.update_last_triggered_step(global_step)

    def _save(self, session, step):
        try:
            return super(CheckpointSaver, self)._save(session, step)
        except (tf.errors.OpError, OSError, ValueError) as e:
            _remove_partial_save(self._checkpoint_dir, step)
            raise TrainingError('could not write the checkpoint at step %d to %s (%s); '
                                'stopping. Last complete checkpoint: %s' % (
                                    step, self._checkpoint_dir, first_line(e),
                                    latest_checkpoint(self._checkpoint_dir, report=False)))


def _remove_partial_save(model_dir, step):
    """What a failed save at `step` left: TF's temporary files (model.ckpt-N.meta.tmp*, the
    model.ckpt-N_temp* data directory), if the directory is still there."""
    names = os.listdir(model_dir) if os.path.isdir(model_dir) else []
    for name in names:
        if not name.startswith('%s-%d' % (PREFIX, step)) or not (
                '.tmp' in name or '_temp' in name):
            continue
        path = os.path.join(model_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def duration(seconds):
    """`seconds` as H:MM:SS, rounded to the second."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    return '%d:%02d:%02d' % (minutes // 60, minutes % 60, seconds)


class ProgressHook(tf.train.SessionRunHook):
    """A tqdm bar with step, loss, accuracy, learning rate and images/s (log lines with the time
    left instead when the output is not a terminal); images/s also to TensorBoard.

    Loss and accuracy are the means over the steps since the last line: one batch's figures
    swing too much to show a trend (a 40-step digits run's last batch read above its first).
    The clock starts when the first step ends: session start-up, restoring and the first step's
    one-off graph work are not training speed, and counted in they made the first rate of a
    resumed run read half the true one."""

    def __init__(self, fetches, start, last_step, global_batch, model_dir, every):
        self._fetches, self._start, self._last = fetches, start, last_step
        self._batch, self._dir, self._every = global_batch, model_dir, every

    def begin(self):
        from tqdm import tqdm
        self._bar = tqdm(total=self._last, initial=self._start, unit='step', dynamic_ncols=True,
                         file=sys.stdout, mininterval=1.0, disable=None)
        self._writer = tf.summary.FileWriterCache.get(self._dir)
        self._time, self._step = None, self._start
        self._sums, self._count = np.zeros(2), 0

    def before_run(self, run_context):
        return tf.train.SessionRunArgs(self._fetches)

    def after_run(self, run_context, run_values):
        r = run_values.results
        step = int(run_context.session.run(self._fetches['step']))
        self._bar.update(step - self._bar.n)
        self._sums += (r['loss'], r['accuracy'])
        self._count += 1
        now = time.time()
        if self._time is None:
            self._time, self._step = now, step
        elif step % self._every == 0 or step >= self._last:
            seconds = max(now - self._time, 1e-9)
            rate = (step - self._step) * self._batch / seconds
            left = (self._last - step) * seconds / max(step - self._step, 1)
            loss, accuracy = self._sums / self._count
            self._time, self._step = now, step
            self._sums, self._count = np.zeros(2), 0
            self._bar.set_postfix(loss='%.4f' % loss, acc='%.3f' % accuracy,
                                  lr='%.3g' % r['lr'], img_s='%.0f' % rate, refresh=False)
            if self._bar.disable:
                LOG.info('step %d/%d loss %.4f acc %.3f lr %.3g %.0f img/s, %s left', step,
                         self._last, loss, accuracy, r['lr'], rate, duration(left))
            self._writer.add_summary(tf.Summary(value=[
                tf.Summary.Value(tag='images_per_sec', simple_value=rate)]), step)

    def end(self, session):
        self._bar.close()


class EvalHook(tf.train.SessionRunHook):
    """Evaluates on the test split every `every` steps and at the end, in the training session,
    with an evaluation tower that shares the training variables."""

    def __init__(self, dataset, model, config, every, last_step):
        self._dataset, self._model, self._config = dataset, model, config
        self._every, self._last = every, last_step

    def begin(self):
        data = self._dataset.input_fn(False, self._config.batch_size)
        self._iterator = tf.data.make_initializable_iterator(data)
        images, labels = self._iterator.get_next()
        self._totals = evaluation.metrics(images, labels, self._dataset, self._model,
                                          self._config.data_format, self._config.fp16)
        self._writer = tf.summary.FileWriterCache.get(self._config.model_dir)
        self._done = -1

    def after_run(self, run_context, run_values):
        step = run_context.session.run(tf.train.get_global_step())
        if step != self._done and (step % self._every == 0 or step >= self._last):
            self._done = step
            results = evaluation.run(run_context.session, self._iterator, self._totals)
            LOG.info('step %d: %s', step, evaluation.format_metrics(results))
            self._writer.add_summary(tf.Summary(value=[
                tf.Summary.Value(tag='eval/' + k, simple_value=v) for k, v in results.items()
                if k != 'examples']), step)
            self._writer.flush()
