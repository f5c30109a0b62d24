"""train.py / eval.py end to end (in process), flag parsing, the real commands' errors,
running without Horovod, and two Horovod workers."""
import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import train
from conftest import DIGITS_BC16, PYTHON, ROOT, SMALL, child_environment, run
from helpers import HANG_GUARD, horovodrun
from models import Recomputation, compat
from models.compat import tf
from utils import data, distribution, hooks, optimizer
from utils.config import TrainConfig
from utils.flags import efficiency


def _logged_losses(stdout):
    return [float(x) for x in re.findall(r'step \d+/\d+ loss ([\d.]+)', stdout)]


def _checkpoint_step(model_dir):
    return int(tf.train.load_variable(tf.train.latest_checkpoint(model_dir), 'global_step'))


@pytest.mark.slow
def test_train_resume_and_eval_end_to_end(trained_run, tmp_path, entry):
    losses = _logged_losses(trained_run.stdout)
    assert len(losses) == 4 and losses[-1] < losses[0], trained_run.stdout
    assert re.search(r'step 40/40 loss .* img/s, 0:00:00 left', trained_run.stdout)
    assert _checkpoint_step(trained_run.model_dir) == 40
    assert os.path.isfile(os.path.join(trained_run.model_dir, 'config.json'))
    events = glob.glob(os.path.join(trained_run.model_dir, 'events.out.tfevents.*'))
    # TensorBoard's graph is in the events file; no text copy of it (slow to write at depth)
    assert any(e.graph_def for e in tf.train.summary_iterator(events[0]))
    assert not os.path.exists(os.path.join(trained_run.model_dir, 'graph.pbtxt'))
    model_dir = str(tmp_path / 'run')
    shutil.copytree(trained_run.model_dir, model_dir)

    again = entry('train.py', '--model_dir', model_dir, '--max_steps', '40', *SMALL)
    assert 'already trained to step 40' in again.stdout

    resumed = entry('train.py', '--model_dir', model_dir, '--max_steps', '60', *SMALL)
    assert re.search(r'step 50/60', resumed.stdout) and 'step 10/60' not in resumed.stdout
    assert _checkpoint_step(model_dir) == 60

    results = str(tmp_path / 'results.json')
    evaluated = entry('eval.py', '--model_dir', model_dir, '--json', results)
    assert re.search(r'model\.ckpt-60 \(step 60\): loss [\d.]+, top-1 [\d.]+% on 360 test images',
                     evaluated.stdout), evaluated.stdout
    with open(results) as f:
        metrics = json.load(f)
    assert metrics['examples'] == 360 and metrics['global_step'] == 60

    other = entry('eval.py', '--model_dir', model_dir, '--depth', '22', check=False)
    assert other.returncode == 1 and 'Traceback' not in other.stderr
    assert re.match(r'error: .*model\.ckpt-60 was written by another architecture: dense block '
                    r'1 has 2 layers there, 3 in this model \(the flags change config\.json: '
                    r'depth 16 != 22\)', other.stderr), other.stderr


@pytest.mark.parametrize('efficient,fp16', [(True, False), ('shared', True)])
def test_the_training_graph_has_fewer_control_edges_than_ops(efficient, fp16):
    """The batch-norm updates are grouped with the step: under TF's usual
    `control_dependencies(update_ops)` around the gradients, every op of the backward pass
    would get every update as a control input, O(L^2) edges (BC-100 shared: 424,640 against
    20,272 ops; the graph's host memory and build time followed)."""
    with tf.Graph().as_default() as graph:
        config = TrainConfig(model_dir='unused', batch_size=4, train_epochs=1, epochs_per_eval=0,
                             learning_rate=0.1, data_format='channels_last', fp16=fp16,
                             efficient=Recomputation.parse(efficient))
        optimizer.training_graph(tf.zeros([4, 8, 8, 1]), tf.zeros([4], tf.int32),
                                 data.get_dataset('digits'), dataclasses.replace(DIGITS_BC16,
                                                                                 depth=52),
                                 config, 10, distribution.SingleProcess())
        ops = graph.get_operations()
        assert sum(len(op.control_inputs) for op in ops) < 0.5 * len(ops)


@pytest.mark.slow
def test_a_short_run_learns_digits(tmp_path, entry):
    """Learning, not just running: 60 steps of the default DenseNet-BC-40, chance is 10%."""
    model_dir = str(tmp_path / 'learn')
    out = entry('train.py', '--model_dir', model_dir, '--max_steps', '60', '--seed', '1').stdout
    top1 = float(re.search(r'step 60: loss [\d.]+, top-1 ([\d.]+)%', out).group(1))
    assert top1 > 90.0, out


@pytest.mark.slow
def test_fp16_training_end_to_end(fp16_run, entry):
    model_dir = fp16_run.model_dir
    assert 'fp16' in fp16_run.stdout and _checkpoint_step(model_dir) == 20
    scale = tf.train.load_variable(tf.train.latest_checkpoint(model_dir), 'loss_scale')
    assert 1 <= scale <= 2 ** 15
    kernel = tf.train.load_variable(tf.train.latest_checkpoint(model_dir),
                                    'densenet/stem/conv0/kernel')
    assert kernel.dtype == np.float32 and np.all(np.isfinite(kernel))
    evaluated = entry('eval.py', '--model_dir', model_dir, '--fp16', 'True').stdout
    assert 'top-1' in evaluated


@pytest.mark.slow
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_two_horovod_workers_agree(tmp_path, precision):
    """Two Gloo workers: averaged gradients (in float16 on the wire under fp16) leave both with
    the same weights, and only rank 0 writes checkpoints."""
    out = str(tmp_path)
    proc = subprocess.run([horovodrun(), '-np', '2', '-H', 'localhost:2', '--gloo', PYTHON,
                           os.path.join(ROOT, 'tests', 'horovod_worker.py'), out, precision],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=HANG_GUARD)
    assert proc.returncode == 0, proc.stdout[-5000:]
    w0 = np.load(os.path.join(out, 'weights0.npz'))
    w1 = np.load(os.path.join(out, 'weights1.npz'))
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 10
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
    # Only rank 0 wrote checkpoints (each rank was given its own model_dir).
    assert _checkpoint_step(os.path.join(out, 'rank0')) == 6
    assert not glob.glob(os.path.join(out, 'rank1', '*'))
    if precision == 'fp16':
        assert 1 <= tf.train.load_variable(os.path.join(out, 'rank0'), 'loss_scale') <= 2 ** 15


class _Clock(object):
    """Stands in for the `time` module in utils.hooks: each reading is the next of `times`."""

    def __init__(self, times):
        self._times = iter(times)

    def time(self):
        return next(self._times)


def test_progress_lines_give_interval_means_rates_without_start_up_and_the_time_left(
        tmp_path, monkeypatch):
    """Six steps of 8 images, logged every 2: the first step ends 100 s after the session
    began and each later one takes 0.5 s, so every rate is 16 img/s (counting the start-up in
    made a resumed run's first rate read half the true one) and the time left is 0.5 s a step.
    Step n's loss is n: each line gives the mean of its two steps, not the last one."""
    # the first reading ends step 1; 100.5, 101.5 and 102.5 end steps 2, 4 and 6
    monkeypatch.setattr(hooks, 'time', _Clock([100.0, 100.5, 101.0, 101.5, 102.0, 102.5]))
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    hooks.LOG.addHandler(handler)
    level = hooks.LOG.level
    hooks.LOG.setLevel(logging.INFO)
    try:
        with tf.Graph().as_default():
            step = tf.train.get_or_create_global_step()
            train_op = tf.assign_add(step, 1)
            counter = tf.Variable(0.0, trainable=False)
            fetches = dict(loss=tf.assign_add(counter, 1.0), accuracy=tf.constant(0.25),
                           lr=tf.constant(0.1), step=step)
            progress = hooks.ProgressHook(fetches, 0, 6, 8, str(tmp_path), 2)
            with tf.train.MonitoredSession(hooks=[progress]) as session:
                for _ in range(6):
                    session.run(train_op)
    finally:
        hooks.LOG.removeHandler(handler)
        hooks.LOG.setLevel(level)
    assert lines == ['step 2/6 loss 1.5000 acc 0.250 lr 0.1 16 img/s, 0:00:02 left',
                     'step 4/6 loss 3.5000 acc 0.250 lr 0.1 16 img/s, 0:00:01 left',
                     'step 6/6 loss 5.5000 acc 0.250 lr 0.1 16 img/s, 0:00:00 left'], lines
    assert hooks.duration(3 * 3600 + 4 * 60 + 5.4) == '3:04:05'
    assert hooks.duration(26 * 3600 + 59.6) == '26:01:00'


def test_the_entry_points_start_tensorflow_on_its_bfc_allocator():
    """Importing an entry script (utils/cli.py) makes TensorFlow's host allocator a BFC one:
    with the default, TF 2.21 trained Fashion-MNIST at half the speed. Only a BFC allocator
    keeps the statistics read here; an explicit setting in the environment is left alone."""
    code = '\n'.join([
        'import {}',
        'from models.compat import tf',
        'from benchmarks.peak import AllocatorStats, peak_bytes',
        'stats = AllocatorStats()',
        'with tf.Session() as sess:',
        '    print(peak_bytes(sess, tf.reduce_sum(tf.random.uniform([1024, 1024]) * 2), stats))'])
    env = child_environment()
    for name in ('TF_CPU_ALLOCATOR_USE_BFC', 'TF_CPU_BFC_MEM_LIMIT_IN_MB'):
        env.pop(name, None)
    for entry in ('train', 'eval', 'export'):
        proc = subprocess.run([PYTHON, '-c', code.format(entry)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert int(proc.stdout.split()[-1]) >= 4 * 1024 * 1024, proc.stdout
    env['TF_CPU_ALLOCATOR_USE_BFC'] = 'false'
    proc = subprocess.run([PYTHON, '-c', code.format('train')], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode != 0 and 'TF_CPU_ALLOCATOR_USE_BFC=true' in proc.stderr, proc.stderr


@pytest.mark.skipif(not compat.TF2, reason='TF 1.15 hangs when its CPU allocator is capped below a '
                    'step (its default cap, 64 GiB, is beyond this machine: the kernel acts first)')
def test_a_step_that_does_not_fit_is_one_line_naming_what_needs_less(tmp_path):
    """A training step larger than the CPU allocator's cap (32 MiB here; utils/cli.py raises
    it to the machine's memory) stops with one line: where, what needs less, and the last
    checkpoint, which is intact. A process of its own: the cap is read when TensorFlow starts."""
    model_dir = str(tmp_path / 'oom')
    proc = subprocess.run(
        [PYTHON, os.path.join(ROOT, 'train.py'), '--dataset', 'synthetic', '--depth', '40',
         '--batch_size', '512', '--max_steps', '3', '--model_dir', model_dir],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        env=dict(child_environment(), TF_CPU_BFC_MEM_LIMIT_IN_MB='32'))
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(error) == 1 and re.match(
        r'error: out of memory after step 0 on CPU:0 \(allocating \w+ (\[[\d,]*\]|scalar)\); '
        r'try a smaller --batch_size \(this run: 512\) or --efficient shared or a higher '
        r'TF_CPU_BFC_MEM_LIMIT_IN_MB \(now 32\); the last checkpoint, .*model\.ckpt-0, is '
        r'intact$', error[0]), proc.stderr[-3000:]
    assert _checkpoint_step(model_dir) == 0


def test_flags_accept_the_older_ports_command_line():
    args = train.parse_args(['--efficient', 'True', '--fp16', 'TRUE', '--batch_size', '64',
                             '--train_epochs', '2', '--epochs_per_eval', '1',
                             '--data_dir', '/data', '--model_dir', '/models',
                             '--data_format', 'channels_last'])
    assert args.efficient == Recomputation(every=1) and args.fp16 is True
    assert args.batch_size == 64 and (args.train_epochs, args.epochs_per_eval) == (2, 1)
    for spelling, value in (('false', False), ('0', False), ('no', False), ('Yes', True),
                            ('1', True)):
        assert train.parse_args(['--efficient', spelling]).efficient == Recomputation.parse(
            value)


def test_help_gives_each_datasets_defaults_from_the_one_record():
    from utils import flags
    from utils.resolve import DEFAULTS
    helps = dict((a.dest, ' '.join(a.help.split())) for a in flags.train_parser()._actions
                 if a.help)
    shown = ' '.join(flags.train_parser().format_help().split())  # what --help prints
    assert flags.eval_parser().format_help() and flags.export_parser().format_help()
    assert 'cosine: half a cosine down to 0 (default: the dataset\'s: digits step' in shown
    for name, defaults in DEFAULTS.items():
        assert '%s %g' % (name, defaults.train_epochs) in helps['train_epochs'], name
        assert '%s %s' % (name, defaults.lr_schedule) in helps['lr_schedule'], name


@pytest.mark.parametrize('argv,message', [
    (['--efficient', 'maybe'], r"efficient must be True, False, 'shared', 'every=N'"),
    (['--fp16', 'maybe'], 'expected a boolean'),
    (['--batch_size', '0'], 'expected an integer from 1 to 65536'),
    (['--batch_size', '-4'], 'expected an integer from 1 to 65536'),
    (['--model', 'resnet50'], 'invalid choice'),
    (['--dropout_rate', '1.5'], r'expected a number in \[0, 1\)'),
])
def test_bad_flag_values_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(tmp_path):
    """The real commands: one line on stderr, nothing else TensorFlow prints, exit 1."""
    missing = run('train.py', '--dataset', 'cifar10', '--data_dir', str(tmp_path / 'none'),
                  '--model_dir', str(tmp_path / 'm'), check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith('error: ') and 'Traceback' not in missing.stderr
    assert 'none: no cifar10 data' in missing.stderr
    no_checkpoint = run('eval.py', '--model_dir', str(tmp_path / 'empty'), check=False)
    assert no_checkpoint.returncode == 1
    assert 'no checkpoint found' in no_checkpoint.stderr and 'Traceback' not in no_checkpoint.stderr
    bad_depth = run('train.py', '--depth', '41', '--model_dir', str(tmp_path / 'd'), check=False)
    assert bad_depth.returncode == 1 and 'depth=41' in bad_depth.stderr
    no_export = run('export.py', '--model_dir', str(tmp_path / 'empty'), '--output', 'x.pb',
                    check=False)
    assert no_export.returncode == 1 and no_export.stderr.count('\n') == 1
    assert no_export.stderr.startswith('error: ') and 'no checkpoint found' in no_export.stderr


def test_efficient_flag_takes_booleans_and_partial_settings():
    import argparse
    assert efficiency('True') == Recomputation(every=1) and efficiency('no') == Recomputation()
    assert str(efficiency('every=3')) == 'every=3'
    assert str(efficiency('Blocks=3,2')) == 'blocks=2,3'
    assert efficiency('Shared') == Recomputation(shared=True) and str(efficiency('shared')) == (
        'shared')
    for bad in ('every=0', 'blocks=', 'some', 'blocks=9', 'shared=1'):
        with pytest.raises(argparse.ArgumentTypeError):
            efficiency(bad)


@pytest.fixture
def no_horovod(monkeypatch):
    """A process in which `import horovod` fails, as where it was never installed."""
    monkeypatch.setitem(sys.modules, 'horovod', None)
    monkeypatch.setitem(sys.modules, 'horovod.tensorflow', None)
    monkeypatch.setattr(distribution, '_current', None)
    for name in distribution.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    distribution._current = None


@pytest.mark.slow
def test_training_needs_no_horovod_and_no_gpu_probe(tmp_path, entry, no_horovod):
    """Without Horovod a run is a single process; the device is chosen without creating one
    (tf.test.is_gpu_available would take memory on every GPU of every worker)."""
    def probe(*args, **kwargs):
        raise AssertionError('a GPU-initialising device query')
    no_horovod.setattr(tf.test, 'is_gpu_available', probe)
    from tensorflow.python.client import device_lib
    no_horovod.setattr(device_lib, 'list_local_devices', probe)
    model_dir = str(tmp_path / 'run')
    out = entry('train.py', '--model_dir', model_dir, '--max_steps', '4', '--epochs_per_eval',
                '0', *SMALL).stdout
    assert 'done at step 4' in out
    assert isinstance(distribution.current(), distribution.SingleProcess)


def test_horovodrun_without_horovod_is_a_one_line_error(tmp_path, entry, no_horovod):
    no_horovod.setenv('HOROVOD_RANK', '0')
    model_dir = str(tmp_path / 'run')
    failed = entry('train.py', '--model_dir', model_dir, check=False)
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1
    assert re.match(r'error: this process was launched by horovodrun or mpirun, but Horovod is '
                    r'not installed here', failed.stderr), failed.stderr
    assert not os.path.exists(model_dir)
