"""Run directories that survive what users do to them: copied or moved, with a damaged index or
a damaged newest checkpoint, or claimed by a second train.py while the first runs."""
import os
import re
import shutil
import signal

import pytest

from conftest import EVERY_20 as STEPS, SMALL
from helpers import LONG, assert_one_line_failure, start, tree, wait_for_checkpoint
from utils import checkpoints
from utils.config import MAX_STEPS


@pytest.fixture
def trained(trained_run):
    """The session's run directory trained to step 40, with checkpoints 0, 20 and 40."""
    return trained_run.model_dir


def _copy(trained, tmp_path, name='run'):
    target = str(tmp_path / name)
    shutil.copytree(trained, target)
    return target


def _write_absolute_index(model_dir, steps=(0, 20, 40)):
    """The index as earlier versions (TF's default saver) wrote it: absolute paths."""
    paths = [os.path.join(os.path.abspath(model_dir), 'model.ckpt-%d' % s) for s in steps]
    with open(os.path.join(model_dir, 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "%s"\n' % paths[-1])
        f.writelines('all_model_checkpoint_paths: "%s"\n' % p for p in paths)


def _resume(entry, model_dir, steps=60):
    return entry('train.py', '--model_dir', model_dir, '--max_steps', str(steps), *STEPS)


@pytest.mark.slow
@pytest.mark.parametrize('absolute', [True, False], ids=['old-absolute-index', 'our-index'])
def test_a_copied_run_trains_on_its_own_checkpoints_and_leaves_the_original(
        trained, tmp_path, entry, absolute):
    original = _copy(trained, tmp_path, 'original')
    if absolute:
        _write_absolute_index(original)
    before = tree(original)
    copy = _copy(original, tmp_path, 'copy')
    out = _resume(entry, copy, 120).stdout  # long enough for the rotation to delete the oldest
    assert 'resuming from %s at step 40' % os.path.join(copy, 'model.ckpt-40') in out, out
    if absolute:
        assert re.search(r'warning: .*copy/checkpoint names .*original/model\.ckpt-40, in another '
                         r'directory .*; using .*copy/model\.ckpt-40', out), out
    assert tree(original) == before
    assert checkpoints.latest_checkpoint(copy) == os.path.join(copy, 'model.ckpt-120')
    assert not os.path.exists(os.path.join(copy, 'model.ckpt-0.index'))  # rotated, in the copy
    with open(os.path.join(copy, 'checkpoint')) as f:
        assert original not in f.read() and copy not in f.read()


@pytest.mark.slow
def test_an_index_of_another_directory_never_restores_into_a_new_run(trained, tmp_path, entry):
    original = _copy(trained, tmp_path, 'original')
    _write_absolute_index(original)
    before = tree(original)
    copy = _copy(original, tmp_path, 'copy')
    for name in os.listdir(copy):
        if name.startswith('model.ckpt-'):
            os.remove(os.path.join(copy, name))
    out = _resume(entry, copy, 20).stdout
    assert 'resuming' not in out and re.search(r'step 10/20', out), out
    assert tree(original) == before
    assert checkpoints.latest_checkpoint(copy) == os.path.join(copy, 'model.ckpt-20')


@pytest.mark.slow
def test_a_moved_run_evaluates_exports_and_resumes(trained, tmp_path, entry):
    original = _copy(trained, tmp_path, 'original')
    _write_absolute_index(original)
    moved = str(tmp_path / 'moved')
    os.rename(original, moved)
    evaluated = entry('eval.py', '--model_dir', moved).stdout
    assert re.search(r'moved/model\.ckpt-40 \(step 40\)', evaluated), evaluated
    entry('export.py', '--model_dir', moved, '--output', str(tmp_path / 'm.pb'))
    assert 'resuming from %s' % os.path.join(moved, 'model.ckpt-40') in _resume(entry, moved).stdout


def _garbage(index):
    with open(index, 'w') as f:
        f.write('\x00garbage{{ not a checkpoint index\n')
    return 'is damaged'


def _truncated(index):
    with open(index, 'r+') as f:
        f.truncate(12)
    return 'is damaged'


def _binary(index):
    with open(index, 'wb') as f:
        f.write(bytes(range(256)) * 4)
    return 'is damaged'


def _not_utf8(index):
    with open(index, 'wb') as f:
        f.write(b'model_checkpoint_path: "model.ckpt-4\xff"\n')
    return 'is damaged'


def _fifo(index):
    os.remove(index)
    os.mkfifo(index)  # reading it would block
    return 'is a FIFO'


@pytest.mark.slow
@pytest.mark.parametrize('damage', [_garbage, _truncated, _binary, _not_utf8, _fifo],
                         ids=['garbage', 'truncated', 'binary', 'not-utf8', 'fifo'])
def test_a_damaged_index_is_named_and_the_newest_checkpoint_used(trained, tmp_path, entry,
                                                                  damage):
    model_dir = _copy(trained, tmp_path)
    index = os.path.join(model_dir, 'checkpoint')
    said = damage(index)
    evaluated = entry('eval.py', '--model_dir', model_dir).stdout
    assert re.search(r'warning: %s %s; using .*model\.ckpt-40' % (re.escape(index), said),
                     evaluated), evaluated
    assert re.search(r'model\.ckpt-40 \(step 40\)', evaluated), evaluated
    out = _resume(entry, model_dir).stdout
    assert 'resuming from %s at step 40' % os.path.join(model_dir, 'model.ckpt-40') in out, out
    assert checkpoints.latest_checkpoint(model_dir) == os.path.join(model_dir, 'model.ckpt-60')
    assert os.path.isfile(index) and not os.path.islink(index)  # train.py wrote a new one


def test_an_index_that_is_a_directory_is_read_around_and_refused_for_writing(trained, tmp_path,
                                                                            entry):
    model_dir = _copy(trained, tmp_path)
    index = os.path.join(model_dir, 'checkpoint')
    os.remove(index)
    os.mkdir(index)
    evaluated = entry('eval.py', '--model_dir', model_dir).stdout
    assert 'warning: %s is a directory' % index in evaluated, evaluated
    before = tree(model_dir)
    assert_one_line_failure(entry('train.py', '--model_dir', model_dir, '--max_steps', '60',
                                  *STEPS, check=False),
                            r'%s is a directory, where a training run writes its checkpoint'
                            % re.escape(index))
    assert tree(model_dir) == before


def _no_index(model_dir):
    os.remove(os.path.join(model_dir, 'model.ckpt-40.index'))
    return r'model\.ckpt-40 is damaged \(no \.index file\)'


def _corrupt_data(model_dir):
    path = os.path.join(model_dir, 'model.ckpt-40.data-00000-of-00001')
    with open(path, 'r+b') as f:
        f.seek(100)
        f.write(b'\xff' * 64)
    return r'model\.ckpt-40 is damaged \(unreadable: .+\)'


def _all_files_gone(model_dir):
    for path in os.listdir(model_dir):
        if path.startswith('model.ckpt-40.'):
            os.remove(os.path.join(model_dir, path))
    return r'checkpoint names .*model\.ckpt-40, which is missing'


@pytest.mark.slow
@pytest.mark.parametrize('damage', [_no_index, _corrupt_data, _all_files_gone],
                         ids=['no-index', 'corrupt-data', 'missing'])
def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_used(trained, tmp_path,
                                                                         entry, damage):
    model_dir = _copy(trained, tmp_path)
    pattern = damage(model_dir)
    using = r'.*; using %s' % re.escape(os.path.join(model_dir, 'model.ckpt-20'))
    for script, args in (('eval.py', []), ('export.py', ['--output', str(tmp_path / 'm.pb')])):
        out = entry(script, '--model_dir', model_dir, *args).stdout
        assert re.search(r'warning: .*' + pattern + using, out), out
    out = _resume(entry, model_dir).stdout
    assert 'resuming from %s at step 20' % os.path.join(model_dir, 'model.ckpt-20') in out, out
    assert checkpoints.latest_checkpoint(model_dir) == os.path.join(model_dir, 'model.ckpt-60')


@pytest.mark.slow
def test_only_damaged_checkpoints_stop_the_run_without_writing(trained, tmp_path, entry):
    model_dir = _copy(trained, tmp_path)
    for step in (0, 20, 40):
        os.remove(os.path.join(model_dir, 'model.ckpt-%d.index' % step))
    before = tree(model_dir)
    for script in ('train.py', 'eval.py'):
        failed = entry(script, '--model_dir', model_dir, *(SMALL if script == 'train.py' else []),
                       check=False)
        assert_one_line_failure(failed, r'no intact checkpoint \(model\.ckpt-0: no \.index '
                                         r'file; model\.ckpt-20: .*\); move the damaged files')
    assert tree(model_dir) == before


@pytest.mark.slow
def test_a_second_writer_is_refused_readers_follow_rotation_and_a_killed_runs_lock_does_not_block(
        tmp_path, entry):
    """A run saving every step keeps only its last 5 checkpoints: eval.py and export.py beside
    it read whichever is newest when their graph is built, even if it was just deleted."""
    model_dir = str(tmp_path / 'run')
    # Steps without end: the run goes on until this test kills it, however slow the machine.
    first = start('--model_dir', model_dir, *LONG + ['--save_checkpoint_steps', '1',
                                                      '--max_steps', str(MAX_STEPS)])
    try:
        wait_for_checkpoint(first, model_dir, 20)
        second = entry('train.py', '--model_dir', model_dir, *LONG, check=False)
        assert_one_line_failure(second, r'%s is in use by another training run \(pid %d on '
                                         r'.+\); wait for it' % (re.escape(model_dir), first.pid))
        for _ in range(3):
            evaluated = entry('eval.py', '--model_dir', model_dir).stdout
            assert re.search(r'model\.ckpt-(\d+) \(step \1\): loss', evaluated), evaluated
        entry('export.py', '--model_dir', model_dir, '--output', str(tmp_path / 'm.pb'))
        assert first.poll() is None, 'training ended before the readers: no race was tried'
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate()
    step = checkpoints.step_of(checkpoints.latest_checkpoint(model_dir, report=False))
    resumed = entry('train.py', '--model_dir', model_dir, '--max_steps', str(step + 20), *STEPS)
    assert 'resuming from %s' % os.path.join(model_dir, 'model.ckpt-%d' % step) in resumed.stdout


def test_scan_tells_complete_from_damaged_checkpoints(tmp_path):
    d = str(tmp_path)
    for name in ('model.ckpt-5.index', 'model.ckpt-5.data-00000-of-00001',
                 'model.ckpt-7.data-00000-of-00002', 'model.ckpt-7.index',
                 'model.ckpt-9.data-00000-of-00001', 'model.ckpt-10.index',
                 'model.ckpt-10.data-00000-of-00001', 'other.ckpt-11.index', 'checkpoint'):
        open(os.path.join(d, name), 'w').close()
    found = checkpoints.scan(d, verify=False)
    assert found.complete == [os.path.join(d, 'model.ckpt-5'), os.path.join(d, 'model.ckpt-10')]
    assert found.damaged == {os.path.join(d, 'model.ckpt-7'): '1 of 2 data files',
                             os.path.join(d, 'model.ckpt-9'): 'no .index file'}
    checkpoints.write_index(d, found.complete)
    with open(os.path.join(d, 'checkpoint')) as f:
        assert f.read() == ('model_checkpoint_path: "model.ckpt-10"\n'
                            'all_model_checkpoint_paths: "model.ckpt-5"\n'
                            'all_model_checkpoint_paths: "model.ckpt-10"\n')
    assert checkpoints.scan(str(tmp_path / 'missing')) == checkpoints.Scan([], {})


@pytest.mark.slow
def test_an_explicit_damaged_checkpoint_is_named(trained, tmp_path, entry):
    model_dir = _copy(trained, tmp_path)
    _corrupt_data(model_dir)
    checkpoint = os.path.join(model_dir, 'model.ckpt-40')
    for script, args in (('eval.py', []), ('export.py', ['--output', str(tmp_path / 'm.pb')])):
        failed = entry(script, '--model_dir', model_dir, '--checkpoint', checkpoint, *args,
                       check=False)
        assert_one_line_failure(failed, r'%s: damaged checkpoint \(unreadable: ' % re.escape(
            checkpoint))
    assert not os.path.exists(str(tmp_path / 'm.pb'))


@pytest.mark.parametrize('change, pattern', [
    (['--batch_size', '16'], r'was started with a global batch of 32 \(--batch_size 32 x 1 '
                             r'workers\), this run\'s is 16 \(16 x 1\).*Resume with --batch_size '
                             r'32 on 1 workers'),
    (['--lr_schedule', 'cosine'], r'was started with --lr_schedule step, this run asks for '
                                  r'cosine'),
], ids=['batch', 'schedule'])
def test_resuming_with_another_batch_or_schedule_is_refused_untouched(trained, tmp_path, entry,
                                                                      change, pattern):
    """Resuming on another global batch would rescale the target step and the learning rates
    (a 2-epoch run stopped at step 39 of 88 ended at step 44): refused, naming both values."""
    model_dir = _copy(trained, tmp_path)
    before = tree(model_dir)
    failed = entry('train.py', '--model_dir', model_dir, '--max_steps', '60', *STEPS, *change,
                   check=False)
    assert_one_line_failure(failed, re.escape(model_dir) + ' ' + pattern)
    assert tree(model_dir) == before
