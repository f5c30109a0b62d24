"""train.py / eval.py end to end (subprocesses), flag parsing, and two Horovod workers."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
SMALL = ['--depth', '16', '--growth_rate', '4', '--batch_size', '32', '--log_every_steps', '10']


def run(script, *args, check=True, timeout=600):
    proc = subprocess.run([PYTHON, os.path.join(ROOT, script)] + list(args), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d):\n%s\n%s' % (script, proc.returncode, proc.stdout,
                                                          proc.stderr[-3000:]))
    return proc


def _logged_losses(stdout):
    return [float(x) for x in re.findall(r'step \d+/\d+ loss ([\d.]+)', stdout)]


def _checkpoint_step(model_dir):
    return int(tf.train.load_variable(tf.train.latest_checkpoint(model_dir), 'global_step'))


@pytest.mark.slow
def test_train_resume_and_eval_end_to_end(tmp_path):
    model_dir = str(tmp_path / 'run')
    first = run('train.py', '--model_dir', model_dir, '--max_steps', '40',
                '--efficient', 'True', '--save_checkpoint_steps', '20', *SMALL)
    losses = _logged_losses(first.stdout)
    assert len(losses) == 4 and losses[-1] < losses[0], first.stdout
    assert _checkpoint_step(model_dir) == 40
    assert os.path.isfile(os.path.join(model_dir, 'config.json'))
    assert glob.glob(os.path.join(model_dir, 'events.out.tfevents.*'))

    again = run('train.py', '--model_dir', model_dir, '--max_steps', '40', *SMALL)
    assert 'already trained to step 40' in again.stdout

    resumed = run('train.py', '--model_dir', model_dir, '--max_steps', '60', *SMALL)
    assert re.search(r'step 50/60', resumed.stdout) and 'step 10/60' not in resumed.stdout
    assert _checkpoint_step(model_dir) == 60

    results = str(tmp_path / 'results.json')
    evaluated = run('eval.py', '--model_dir', model_dir, '--json', results)
    assert re.search(r'model\.ckpt-60 \(step 60\): loss [\d.]+, top-1 [\d.]+% on 360 test images',
                     evaluated.stdout), evaluated.stdout
    with open(results) as f:
        metrics = json.load(f)
    assert metrics['examples'] == 360 and metrics['global_step'] == 60

    other = run('eval.py', '--model_dir', model_dir, '--depth', '22', check=False)
    assert other.returncode == 1 and 'Traceback' not in other.stderr
    assert re.match(r'error: .*model\.ckpt-60 was written by another architecture: it has no '
                    r'variable densenet/denseblock1/denselayer3/norm1/gamma', other.stderr), \
        other.stderr


@pytest.mark.slow
def test_a_short_run_learns_digits(tmp_path):
    """Learning, not just running: 60 steps of the default DenseNet-BC-40, chance is 10%."""
    model_dir = str(tmp_path / 'learn')
    out = run('train.py', '--model_dir', model_dir, '--max_steps', '60', '--seed', '1').stdout
    top1 = float(re.search(r'step 60: loss [\d.]+, top-1 ([\d.]+)%', out).group(1))
    assert top1 > 90.0, out


@pytest.mark.slow
def test_fp16_training_end_to_end(tmp_path):
    model_dir = str(tmp_path / 'fp16')
    out = run('train.py', '--model_dir', model_dir, '--max_steps', '20', '--fp16', 'True',
              '--efficient', 'True', *SMALL).stdout
    assert 'fp16' in out and _checkpoint_step(model_dir) == 20
    scale = tf.train.load_variable(tf.train.latest_checkpoint(model_dir), 'loss_scale')
    assert 1 <= scale <= 2 ** 15
    kernel = tf.train.load_variable(tf.train.latest_checkpoint(model_dir),
                                    'densenet/stem/conv0/kernel')
    assert kernel.dtype == np.float32 and np.all(np.isfinite(kernel))
    evaluated = run('eval.py', '--model_dir', model_dir, '--fp16', 'True').stdout
    assert 'top-1' in evaluated


@pytest.mark.slow
def test_two_horovod_workers_agree(tmp_path):
    horovodrun = os.path.join(os.path.dirname(PYTHON), 'horovodrun')
    if not os.path.exists(horovodrun):
        horovodrun = shutil.which('horovodrun')
    assert horovodrun, 'horovodrun is not installed (make venv builds it)'
    out = str(tmp_path)
    proc = subprocess.run([horovodrun, '-np', '2', '-H', 'localhost:2', '--gloo', PYTHON,
                           os.path.join(ROOT, 'tests', 'horovod_worker.py'), out],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:]
    w0 = np.load(os.path.join(out, 'weights0.npz'))
    w1 = np.load(os.path.join(out, 'weights1.npz'))
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 10
    for name in w0.files:
        np.testing.assert_array_equal(w0[name], w1[name], err_msg=name)
    # Only rank 0 wrote checkpoints (each rank was given its own model_dir).
    assert _checkpoint_step(os.path.join(out, 'rank0')) == 6
    assert not glob.glob(os.path.join(out, 'rank1', '*'))


def test_flags_accept_the_older_ports_command_line():
    sys.path.insert(0, ROOT)
    import train
    args = train.parse_args(['--efficient', 'True', '--fp16', 'TRUE', '--batch_size', '64',
                             '--train_epochs', '2', '--epochs_per_eval', '1',
                             '--data_dir', '/data', '--model_dir', '/models',
                             '--data_format', 'channels_last'])
    assert args.efficient is True and args.fp16 is True and args.batch_size == 64
    assert (args.train_epochs, args.epochs_per_eval) == (2, 1)
    for spelling, value in (('false', False), ('0', False), ('no', False), ('Yes', True),
                            ('1', True)):
        assert train.parse_args(['--efficient', spelling]).efficient is value


@pytest.mark.parametrize('argv,message', [
    (['--efficient', 'maybe'], r"efficient must be True, False, 'every=N'"),
    (['--fp16', 'maybe'], 'expected a boolean'),
    (['--batch_size', '0'], 'expected a positive integer'),
    (['--batch_size', '-4'], 'expected a positive integer'),
    (['--model', 'resnet50'], 'invalid choice'),
    (['--dropout_rate', '1.5'], r'expected a number in \[0, 1\)'),
])
def test_bad_flag_values_are_argparse_errors(capsys, argv, message):
    sys.path.insert(0, ROOT)
    import train
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(tmp_path):
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


def test_efficient_flag_takes_booleans_and_partial_settings():
    import argparse
    from utils.flags import efficiency
    assert efficiency('True') is True and efficiency('no') is False
    assert efficiency('every=3') == 'every=3' and efficiency('Blocks=3,2') == 'blocks=2,3'
    for bad in ('every=0', 'blocks=', 'some', 'blocks=9'):
        with pytest.raises(argparse.ArgumentTypeError):
            efficiency(bad)
