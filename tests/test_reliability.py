"""Faults: kill -9 and resume, SIGTERM, non-finite losses, failing saves, a dying Horovod worker;
and a table of bad inputs, each through the entry point's main(argv) (the real commands' one-line
errors are tested in test_train.py)."""
import glob
import json
import os
import pickle
import re
import resource
import shutil
import signal
import subprocess
import time
import types

import numpy as np
import pytest

from conftest import DIGITS_BC16, PYTHON, ROOT, SMALL, child_environment
from helpers import (HANG_GUARD, LONG, Payload, assert_one_line_failure, cifar_images,
                     interruptible, latest_step, make_cifar10_bin, make_cifar_py, make_idx_dataset,
                     make_imagenet, non_finite, start, tree, wait_for_checkpoint,
                     write_cifar_bin, write_idx)
from models.compat import tf
from utils import cli, data, optimizer, run_dir, run_loop
from utils.config import TrainConfig
from utils.errors import TrainingError


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes_and_finishes(tmp_path, entry):
    model_dir = str(tmp_path / 'run')
    args = ['--model_dir', model_dir] + LONG + ['--max_steps', '200']
    proc = start(*args)
    wait_for_checkpoint(proc, model_dir, 40)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = latest_step(model_dir)
    # The index names only complete checkpoints, and every one it lists reads back.
    state = tf.train.get_checkpoint_state(model_dir)
    for path in state.all_model_checkpoint_paths:
        assert tf.train.list_variables(path) and not non_finite(path)
    resumed = entry('train.py', *args)
    assert 'resuming from %s at step %d' % (
        os.path.join(model_dir, 'model.ckpt-%d' % killed_at), killed_at) in resumed.stdout
    assert 'done at step 200' in resumed.stdout
    assert latest_step(model_dir) == 200
    # The schedule went on from the checkpoint's step: /10 at 100, /100 at 150 (0.025 base).
    rates = dict((int(s), float(r)) for s, r in re.findall(r'step (\d+)/200 .* lr ([\d.e-]+)',
                                                           resumed.stdout))
    assert min(rates) > killed_at and rates[200] == pytest.approx(0.00025)
    evaluated = entry('eval.py', '--model_dir', model_dir)
    loss = float(re.search(r'loss ([\d.]+)', evaluated.stdout).group(1))
    assert np.isfinite(loss)


@pytest.mark.slow
def test_sigterm_saves_at_the_step_it_stopped_and_exits_0(tmp_path):
    model_dir = str(tmp_path / 'run')
    proc = start('--model_dir', model_dir, *LONG)
    wait_for_checkpoint(proc, model_dir, 20)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, err
    stopped = re.search(r'stopped by SIGTERM at step (\d+); checkpoint saved: (\S+)', out)
    assert stopped, out
    step = int(stopped.group(1))
    assert 20 <= step < 600 and stopped.group(2) == tf.train.latest_checkpoint(model_dir)
    assert latest_step(model_dir) == step
    assert glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))


@pytest.mark.slow
def test_a_nan_batch_stops_float32_training_and_leaves_the_last_checkpoint(tmp_path, entry):
    model_dir = str(tmp_path / 'run')
    proc = entry('train.py', '--model_dir', model_dir, '--inject_nan', '25', *LONG, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    last = os.path.join(model_dir, 'model.ckpt-20')
    # NaN images give a NaN loss on TF 1.15. Under TF 2's oneDNN optimisations (on by default
    # on x86) the loss comes out finite and the gradients NaN (TF_ENABLE_ONEDNN_OPTS=0: a NaN
    # loss as on 1.15): either way the step is not applied and the run stops.
    assert re.fullmatch(r'error: (loss is nan|non-finite gradients) at step 25; stopping without '
                        r'applying it\. The last checkpoint, %s, is intact\n' % re.escape(last),
                        proc.stderr), proc.stderr
    assert tf.train.latest_checkpoint(model_dir) == last and not non_finite(last)
    evaluated = entry('eval.py', '--model_dir', model_dir)
    assert np.isfinite(float(re.search(r'loss ([\d.]+)', evaluated.stdout).group(1)))


@pytest.mark.slow
def test_fp16_skips_overflowing_steps_and_stops_only_when_they_persist(tmp_path, entry):
    small = SMALL + ['--max_steps', '40', '--save_checkpoint_steps', '20', '--fp16', 'True',
                     '--epochs_per_eval', '0']
    skipped = str(tmp_path / 'skipped')
    entry('train.py', '--model_dir', skipped, '--inject_nan', '25:3', *small)
    final = tf.train.latest_checkpoint(skipped)
    assert final.endswith('-40') and not non_finite(final)  # moving averages included
    # Three skipped steps halved the scale three times (it grows back only every 2000).
    assert tf.train.load_variable(final, 'loss_scale') == optimizer.INITIAL_LOSS_SCALE / 8
    stuck = str(tmp_path / 'stuck')
    proc = entry('train.py', '--model_dir', stuck, '--inject_nan', '25:1000', *small,
                 check=False)
    assert proc.returncode == 1
    # NaN images give a NaN loss, or, where TF 2's oneDNN kernels run (CPUs with AVX-512
    # VNNI), a finite loss and NaN gradients: either stops the run the same way.
    assert re.fullmatch(r'error: (loss is nan|non-finite gradients) at step 2[45] \(%d steps in '
                        r'a row; loss scale down '
                        r'to 1\); stopping without applying it\. The last checkpoint, \S+-20, is '
                        r'intact\n' % run_loop.MAX_NONFINITE_FP16_STEPS, proc.stderr), proc.stderr
    assert not non_finite(tf.train.latest_checkpoint(stuck))


class _BreakModelDir(tf.train.SessionRunHook):
    """Replaces the model directory by a file after `step`, as a vanished mount would."""

    def __init__(self, model_dir, step):
        self.model_dir, self.step = model_dir, step

    def after_run(self, run_context, run_values):
        if run_context.session.run(tf.train.get_global_step()) == self.step:
            shutil.rmtree(self.model_dir)
            open(self.model_dir, 'w').close()


def _train_until_the_save_at_20_fails(model_dir, hook):
    """Trains digits to step 30, saving every 10 steps, with `hook` breaking the save at step
    20; returns the TrainingError's message."""
    config = TrainConfig(model_dir=model_dir, batch_size=16, train_epochs=1, max_steps=30,
                         epochs_per_eval=0, learning_rate=0.05, data_format='channels_last',
                         save_checkpoint_steps=10, log_every_steps=10)
    with pytest.raises(TrainingError, match=r'could not write the checkpoint at step 20') as e:
        run_loop.train(data.get_dataset('digits'), DIGITS_BC16, config, extra_hooks=[hook])
    return str(e.value)


@pytest.mark.slow
def test_a_failing_save_stops_training_with_a_message(tmp_path):
    model_dir = str(tmp_path / 'run')
    message = _train_until_the_save_at_20_fails(model_dir, _BreakModelDir(model_dir, 15))
    assert re.match(r'could not write the checkpoint at step 20 to %s \(.*\); stopping'
                    % model_dir, message), message


class _DiskFullAt(tf.train.SessionRunHook):
    """From step 15 no file may grow past half the meta graph saved at step 10 (RLIMIT_FSIZE;
    SIGXFSZ ignored): the save at step 20 fails halfway through its meta graph, as on a full
    disk."""

    def __init__(self, model_dir):
        self.model_dir = model_dir

    def after_run(self, run_context, run_values):
        if run_context.session.run(tf.train.get_global_step()) == 15:
            meta = os.path.getsize(os.path.join(self.model_dir, 'model.ckpt-10.meta'))
            resource.setrlimit(resource.RLIMIT_FSIZE, (meta // 2, resource.RLIM_INFINITY))


@pytest.mark.slow
def test_a_save_that_fails_midway_leaves_no_temporary_files(tmp_path):
    model_dir = str(tmp_path / 'run')
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        _train_until_the_save_at_20_fails(model_dir, _DiskFullAt(model_dir))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        signal.signal(signal.SIGXFSZ, handler)
    assert not [n for n in os.listdir(model_dir) if '.tmp' in n or '_temp' in n], \
        os.listdir(model_dir)


def test_free_space_is_checked_against_the_first_saves(tmp_path):
    with tf.Graph().as_default():
        small = [tf.Variable(tf.zeros([10]))]
        run_dir.check_free_space(str(tmp_path), small, 1000)
        huge = [tf.Variable(tf.zeros([2 ** 22, 2 ** 22]))]  # 64 TiB, never allocated
        with pytest.raises(TrainingError, match=r'MiB free, the first checkpoints of this run '
                                                r'need 134217728\.0 MiB \(weights 67108864\.0 '
                                                r'MiB twice, the graph 0\.0 MiB %d times\)'
                                                % run_dir.GRAPH_COPIES):
            run_dir.check_free_space(str(tmp_path), huge, 1000)
        free = shutil.disk_usage(str(tmp_path)).free
        with pytest.raises(TrainingError, match=r'the graph [\d.]+ MiB %d times'
                                                % run_dir.GRAPH_COPIES):
            run_dir.check_free_space(str(tmp_path), small, free // run_dir.GRAPH_COPIES + 1)


def test_a_run_refused_for_space_leaves_no_lock_and_no_directory(tmp_path):
    fresh, existing = str(tmp_path / 'new' / 'run'), str(tmp_path)
    with tf.Graph().as_default():
        huge = [tf.Variable(tf.zeros([2 ** 22, 2 ** 22]))]
        for model_dir in (fresh, existing):
            with pytest.raises(TrainingError, match='MiB free'):
                with run_dir.claim(model_dir, huge, 1000):
                    pass
    assert not os.path.exists(fresh) and os.listdir(existing) == ['new']
    assert os.listdir(str(tmp_path / 'new')) == []


def _rank_pid(model_dir, rank):
    """The pid of the train.py worker of `rank` writing to `model_dir` (from /proc)."""
    for environ in glob.glob('/proc/[0-9]*/environ'):
        try:
            with open(environ, 'rb') as f:
                env = f.read().split(b'\0')
            with open(environ.replace('environ', 'cmdline'), 'rb') as f:
                cmdline = f.read()
        except OSError:
            continue
        if (b'HOROVOD_RANK=%d' % rank in env and b'train.py' in cmdline
                and model_dir.encode() in cmdline):
            return int(environ.split('/')[2])
    return None


def _signal_rank_1_of_2(model_dir, signum):
    """Starts train.py under horovodrun with two workers and sends rank 1 `signum` once the
    second checkpoint is written; returns the horovodrun process."""
    proc = start('--model_dir', model_dir, *LONG, horovod=True)
    wait_for_checkpoint(proc, model_dir, 20)
    os.kill(_rank_pid(model_dir, 1), signum)
    return proc


@pytest.mark.slow
def test_horovod_a_signal_to_one_worker_stops_both_at_the_same_step(tmp_path):
    model_dir = str(tmp_path / 'run')
    proc = _signal_rank_1_of_2(model_dir, signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    stopped = re.findall(r'stopped by (.+) at step (\d+); checkpoint saved', out)
    assert stopped and len(stopped) == 1, out  # rank 0 reports; rank 1 was the one signalled
    assert stopped[0][0] == "another worker's signal"
    assert latest_step(model_dir) == int(stopped[0][1])


@pytest.mark.slow
def test_horovod_a_dead_worker_ends_the_job_instead_of_hanging(tmp_path):
    model_dir = str(tmp_path / 'run')
    proc = _signal_rank_1_of_2(model_dir, signal.SIGKILL)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode != 0
    # The launcher ended the job because rank 1 died (rank 0 did not wait for Gloo's timeout).
    assert 'Terminating remaining workers after failure of Process 1' in out + err, out + err
    assert _rank_pid(model_dir, 0) is None  # rank 0 did not outlive the job


# ---------------------------------------------------------------------------- bad inputs

def _cifar_missing(tmp):
    return ['--dataset', 'cifar10', '--data_dir', os.path.join(tmp, 'nowhere')]


def _cifar_empty(tmp):
    os.makedirs(os.path.join(tmp, 'empty'))
    return ['--dataset', 'cifar10', '--data_dir', os.path.join(tmp, 'empty')]


def _cifar_truncated(tmp):
    d, _ = make_cifar10_bin(tmp)
    with open(os.path.join(d, 'data_batch_2.bin'), 'r+b') as f:
        f.truncate(3073 + 10)
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _cifar_bad_label(tmp):
    d, _ = make_cifar10_bin(tmp)
    write_cifar_bin(os.path.join(d, 'data_batch_1.bin'), cifar_images(2, 0), [3, 12])
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _cifar_empty_file(tmp):
    d, _ = make_cifar10_bin(tmp)
    open(os.path.join(d, 'data_batch_3.bin'), 'w').close()
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _cifar_float_pixels(tmp):
    d = make_cifar_py(tmp)
    with open(os.path.join(d, 'data_batch_2'), 'wb') as f:
        pickle.dump({b'data': np.random.rand(3, 3072), b'labels': [1, 2, 3]}, f, protocol=2)
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _cifar_fractional_label(tmp):
    d = make_cifar_py(tmp)
    with open(os.path.join(d, 'data_batch_2'), 'wb') as f:
        pickle.dump({b'data': np.zeros((2, 3072), np.uint8), b'labels': [1, 3.7]}, f,
                    protocol=2)
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _cifar_pickle_payload(tmp):
    d = make_cifar_py(tmp)
    with open(os.path.join(d, 'data_batch_1'), 'wb') as f:
        pickle.dump({b'data': Payload(os.path.join(tmp, 'pwned')), b'labels': [1]}, f,
                    protocol=2)
    return ['--dataset', 'cifar10', '--data_dir', tmp]


def _idx_truncated(tmp):
    make_idx_dataset(tmp)
    path = os.path.join(tmp, 'train-images-idx3-ubyte.gz')
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    return ['--dataset', 'fashion_mnist', '--data_dir', tmp]


def _idx_count_mismatch(tmp):
    make_idx_dataset(tmp, gz=False)
    write_idx(os.path.join(tmp, 't10k-labels-idx1-ubyte'), [1, 2, 3])
    return ['--dataset', 'mnist', '--data_dir', tmp]


def _corrupt_tfrecord(tmp):
    make_imagenet(tmp)
    with open(os.path.join(tmp, 'train-00000-of-00001'), 'r+b') as f:
        f.seek(20)
        f.write(b'\xff' * 16)
    return ['--dataset', 'imagenet', '--data_dir', tmp, '--model', 'densenet_bc',
            '--image_size', '32', '--depth', '16']


def _not_a_directory(tmp):
    open(os.path.join(tmp, 'file'), 'w').close()
    return ['--model_dir', os.path.join(tmp, 'file', 'run')]


BAD_TRAIN_INPUTS = [
    ('missing data dir', _cifar_missing, r'nowhere: no cifar10 data; expected '),
    ('empty data dir', _cifar_empty, r'empty: no cifar10 data; expected '),
    ('truncated CIFAR binary', _cifar_truncated, r'data_batch_2\.bin: truncated'),
    ('empty CIFAR binary', _cifar_empty_file, r'data_batch_3\.bin: empty CIFAR binary file'),
    ('float pixels', _cifar_float_pixels, r'data_batch_2: pixels of type float64, expected '
                                          r'uint8'),
    ('fractional label', _cifar_fractional_label, r'data_batch_2: label 3\.7 is not a class'),
    ('label out of range', _cifar_bad_label, r'data_batch_1\.bin: label 12 out of range'),
    ('pickle payload', _cifar_pickle_payload, r'data_batch_1: not a CIFAR python batch '
                                              r'\(refusing to load (posix|os)\.system\)'),
    ('truncated IDX gzip', _idx_truncated, r'train-images-idx3-ubyte\.gz: unreadable'),
    ('IDX count mismatch', _idx_count_mismatch, r't10k-labels-idx1-ubyte holds 3 labels but '
                                                r'.*t10k-images-idx3-ubyte holds 20 images'),
    ('corrupt TFRecord', _corrupt_tfrecord, r'train-00000-of-00001: not a readable TFRecord'),
    ('unwritable model dir', _not_a_directory, r'cannot write to --model_dir .*file/run: '
                                               r'Not a directory'),
    ('bogus model', lambda tmp: ['--model', 'resnet50'], r'--model: invalid choice'),
    ('zero batch', lambda tmp: ['--batch_size', '0'], r'expected an integer from 1 to'),
    ('negative batch', lambda tmp: ['--batch_size', '-4'], r'expected an integer from 1 to'),
    ('depth off the BC rule', lambda tmp: ['--depth', '41'], r'depth=41'),
    ('NCHW without a GPU', lambda tmp: ['--data_format', 'channels_first'],
     r'channels_first needs a GPU'),
    ('model too deep for the image', lambda tmp: ['--model', 'densenet121'],
     r'8x8 images are too small for 4 dense blocks after the ImageNet stem.*at least 29x29'),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,make,pattern', BAD_TRAIN_INPUTS,
                         ids=[row[0] for row in BAD_TRAIN_INPUTS])
def test_bad_input_to_train_is_one_line_and_touches_nothing(tmp_path, entry, name, make,
                                                           pattern):
    tmp = str(tmp_path)
    model_dir = os.path.join(tmp, 'model')
    args = ['--model_dir', model_dir, '--max_steps', '2'] + make(tmp)
    before = tree(model_dir)
    proc = entry('train.py', *args, check=False)
    assert_one_line_failure(proc, pattern)
    assert tree(model_dir) == before
    assert not os.path.exists(os.path.join(tmp, 'pwned'))


def _rewritten_config(model_dir, tmp, **changes):
    """A model dir whose config.json describes another model (export.py reads only that)."""
    other = os.path.join(tmp, 'other')
    os.makedirs(other)
    with open(os.path.join(model_dir, 'config.json')) as f:
        config = json.load(f)
    config.update(changes)
    with open(os.path.join(other, 'config.json'), 'w') as f:
        json.dump(config, f)
    return ['--model_dir', other, '--checkpoint', tf.train.latest_checkpoint(model_dir)]


@pytest.mark.slow
@pytest.mark.parametrize('script,extra,pattern', [
    ('eval.py', ['--depth', '22'], r'another architecture: dense block 1 has 2 layers there, '
                                   r'3 in this model \(the flags change config\.json: depth'),
    ('eval.py', ['--growth_rate', '6'], r'another architecture: densenet/stem/conv0/kernel is '
                                        r'\[3, 3, 1, 8\] there, \[3, 3, 1, 12\] in this model'),
    ('export.py', dict(depth=22), r'another architecture: dense block 1 has 2 layers there, '
                                  r'3 in this model'),
    # An edited config.json of a huge model: named before the graph (minutes) is built.
    ('export.py', dict(depth=2998), r'dense block 1 has 2 layers there, 499 in this model'),
    ('export.py', dict(growth_rate=6), r'another architecture: densenet/stem/conv0/kernel is'),
    ('eval.py', ['--data_format', 'channels_first'], r'channels_first needs a GPU'),
], ids=['eval depth', 'eval growth rate', 'export depth', 'export huge depth',
        'export growth rate', 'eval NCHW'])
def test_a_checkpoint_of_another_shape_is_refused_by_eval_and_export(trained_run, tmp_path, entry,
                                                                     script, extra, pattern):
    output = str(tmp_path / 'model.pb')
    if isinstance(extra, dict):
        extra = _rewritten_config(trained_run.model_dir, str(tmp_path), **extra) + [
            '--output', output]
    else:
        extra = ['--model_dir', trained_run.model_dir] + extra
    before = tree(trained_run.model_dir)
    proc = entry(script, *extra, check=False)
    assert_one_line_failure(proc, pattern)
    assert tree(trained_run.model_dir) == before and not os.path.exists(output)


def test_a_second_signal_exits_at_once():
    script = '\n'.join([
        'import os, signal, sys, time',
        'sys.path.insert(0, %r)' % ROOT,
        'from utils import cli, hooks',
        'cli.setup_logging()',
        'signals = hooks.StopSignals()',
        'with signals.handled():',
        '    os.kill(os.getpid(), signal.SIGTERM)',
        '    time.sleep(0.2)',
        '    print("still running after the first:", signals.name, flush=True)',
        '    os.kill(os.getpid(), signal.SIGTERM)',
        '    time.sleep(5)',
        'print("not reached")',
    ])
    proc = subprocess.run([PYTHON, '-c', script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=HANG_GUARD)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert 'SIGTERM: stopping after this step' in proc.stdout
    assert 'still running after the first: SIGTERM' in proc.stdout
    assert 'not reached' not in proc.stdout


@pytest.mark.slow
def test_two_sigterms_within_one_step_exit_at_once(tmp_path):
    """Python runs its handler once for both when they arrive during one session.run; the
    second must still win. Steps of about a second here; the signals 0.2 s apart (sent back to
    back, the kernel may merge them into one)."""
    model_dir = str(tmp_path / 'run')
    proc = start('--model_dir', model_dir, '--depth', '40', '--batch_size', '1024',
                  '--max_steps', '100', '--epochs_per_eval', '0')
    wait_for_checkpoint(proc, model_dir, 0)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert 'stopped by SIGTERM' not in out


@pytest.mark.slow
def test_ctrl_c_while_building_the_training_graph_is_one_line(tmp_path):
    model_dir = str(tmp_path / 'run')
    # DenseNet-121's training graph takes far longer to build than the 8 s waited here
    command = [PYTHON, os.path.join(ROOT, 'train.py'), '--model_dir', model_dir, '--dataset',
               'synthetic', '--synthetic_like', 'imagenet', '--model', 'densenet121',
               '--batch_size', '1']
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=child_environment(),
                            preexec_fn=interruptible)
    time.sleep(8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130 and err == 'error: interrupted (SIGINT)\n', (out, err)
    assert not os.path.exists(model_dir)


def test_ctrl_c_that_unbalances_a_graph_context_is_still_one_line(capsys):
    """Where the interrupt lands decides what surfaces: inside a nested control_dependencies
    (as in the test above, on a busy machine) the outer one's exit raises TensorFlow's own
    AssertionError, chained to the KeyboardInterrupt."""
    def build(args):
        graph = tf.Graph()
        with graph.control_dependencies(None):
            graph.control_dependencies(None).__enter__()  # the interrupt came before its exit
            raise KeyboardInterrupt

    def parse(argv):
        return types.SimpleNamespace(debug=False)

    assert cli.run_main(parse, build, []) == 130
    assert capsys.readouterr().err == 'error: interrupted (SIGINT)\n'

    def save(args):  # one of our errors, raised while the interrupt unwinds
        try:
            raise KeyboardInterrupt
        finally:
            raise TrainingError('could not write the checkpoint at step 20')

    assert cli.run_main(parse, save, []) == 130
    assert capsys.readouterr().err == 'error: interrupted (SIGINT)\n'

    def bug(args):
        with tf.Graph().control_dependencies(None):
            raise AssertionError('a bug of ours')

    with pytest.raises(AssertionError, match='a bug of ours'):
        cli.run_main(parse, bug, [])


@pytest.mark.slow
def test_ctrl_c_in_eval_is_one_line(trained_run, tmp_path):
    fifo = str(tmp_path / 'results.json')
    os.mkfifo(fifo)  # eval.py blocks writing --json there, after printing its results
    proc = subprocess.Popen([PYTHON, os.path.join(ROOT, 'eval.py'), '--model_dir', trained_run.model_dir,
                             '--json', fifo], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True,
                            env=child_environment(), preexec_fn=interruptible)
    line = proc.stdout.readline()
    assert 'top-1' in line, (line, proc.communicate())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=HANG_GUARD)
    assert proc.returncode == 130 and err == 'error: interrupted (SIGINT)\n', (out, err)


@pytest.mark.parametrize('where, pattern', [
    ('missing/results.json', r'--json \S+missing/results\.json: no directory \S+missing to '
                             r'write it in'),
    ('.', r'--json \S+: a directory'),
], ids=['no such directory', 'a directory'])
def test_a_json_path_eval_cannot_write_is_refused_before_evaluating(trained_run, tmp_path, entry,
                                                                     where, pattern):
    failed = entry('eval.py', '--model_dir', trained_run.model_dir, '--json',
                   os.path.join(str(tmp_path), where), check=False)
    assert_one_line_failure(failed, pattern)
    assert 'top-1' not in failed.stdout  # refused before the evaluation, not after it
