"""What the commands read and write (utils/files.py; docs/operations.md, "Files read and
written"): read-only commands never write over a run, one safe writer for every output, one
bounded reader for every input, bounds on every size, and what a closed or full standard output
does. A row per class of hostile input; in this process except where a pipe or a signal is
what is tested."""
import errno
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import PYTHON, ROOT, SMALL, call_main, child_environment
from helpers import assert_one_line_failure, tree
from models.compat import tf
from utils import data, files
from utils.errors import OutputError, UsageError
from utils.predict import Predictor

STEPS = ['--max_steps', '60', '--save_checkpoint_steps', '20', '--epochs_per_eval', '0'] + SMALL


@pytest.fixture
def run_dir(trained_run, tmp_path):
    """A copy of the session's trained run (checkpoints 0, 20, 40, config.json, schedule.json,
    the index and the lock file), the test's to damage."""
    copy = str(tmp_path / 'run')
    shutil.copytree(trained_run.model_dir, copy)
    return copy


# -- 1. read-only commands never write over the run they read ------------------------------

def _spellings(model_dir, tmp_path):
    """Ways to name files of `model_dir` from outside: direct, `..`, a symlink, a hard link."""
    parent, name = os.path.split(model_dir)
    os.symlink(os.path.join(model_dir, 'checkpoint'), str(tmp_path / 'link.pb'))
    os.link(os.path.join(model_dir, 'model.ckpt-40.index'), str(tmp_path / 'hard.pb'))
    return [
        ('eval.py', '--json', os.path.join(model_dir, 'config.json')),
        ('eval.py', '--json', os.path.join(model_dir, '..', name, 'schedule.json')),
        ('eval.py', '--json', os.path.join(model_dir, 'train.lock')),
        ('export.py', '--output', os.path.join(model_dir, 'model.ckpt-40.index')),
        ('export.py', '--output', os.path.join(model_dir, 'model.ckpt-60.index')),  # a new one
        ('export.py', '--output', os.path.join(model_dir, 'checkpoint')),
        ('export.py', '--output', str(tmp_path / 'link.pb')),
        ('export.py', '--output', str(tmp_path / 'hard.pb')),
        ('export.py', '--saved_model', os.path.join(model_dir, 'events.out.tfevents.1')),
    ]


@pytest.mark.slow
def test_eval_and_export_never_write_onto_a_file_of_the_run_they_read(run_dir, tmp_path, entry):
    cases = _spellings(run_dir, tmp_path)
    before = tree(run_dir)
    for script, flag, path in cases:
        result = entry(script, '--model_dir', run_dir, flag, path, check=False)
        assert_one_line_failure(result, r'%s %s(: a file of the run directory| is .*, which '
                                        r'this command reads)' % (flag, re.escape(path)))
        assert tree(run_dir) == before, (script, flag, path)
    # A new file of another name beside the run's own is an ordinary output.
    entry('export.py', '--model_dir', run_dir, '--output', os.path.join(run_dir, 'model.pb'))
    assert os.path.isfile(os.path.join(run_dir, 'model.pb'))


# -- 2. the lock file is not followed, whatever stands there ---------------------------------

def _plant(kind, path, victim):
    if kind == 'symlink':
        os.symlink(victim, path)
    elif kind == 'dangling symlink':
        os.symlink(victim + '.missing', path)
    elif kind == 'fifo':
        os.mkfifo(path)
    else:
        os.mkdir(path)


@pytest.mark.parametrize('kind, message', [
    ('symlink', 'is a symbolic link, where this run keeps its lock'),
    ('dangling symlink', 'is a symbolic link, where this run keeps its lock'),
    ('fifo', 'is a FIFO, where this run keeps its lock'),
    ('directory', 'is a directory, where this run keeps its lock'),
])
def test_a_lock_file_that_is_no_regular_file_is_refused_and_nothing_is_written(
        run_dir, tmp_path, entry, kind, message):
    victim = str(tmp_path / 'victim.txt')
    with open(victim, 'w') as f:
        f.write('precious\n')
    lock = os.path.join(run_dir, 'train.lock')
    os.remove(lock)
    _plant(kind, lock, victim)
    before = tree(run_dir) if kind in ('symlink', 'directory') else None
    result = entry('train.py', '--model_dir', run_dir, *STEPS, check=False)
    assert_one_line_failure(result, re.escape(lock) + ' ' + message)
    with open(victim) as f:
        assert f.read() == 'precious\n'
    if before is not None:
        assert tree(run_dir) == before


def test_a_run_file_deleted_while_outputs_are_checked_is_passed_over(tmp_path, monkeypatch):
    """A training run beside eval.py or export.py rotates its checkpoints away: a file listed
    a moment ago may be gone when it is compared with the output."""
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'model.ckpt-1.index').write_bytes(b'')
    (tmp_path / 'out.json').write_bytes(b'{}')
    protected = files.Protected([str(run)], [], lambda name: name.startswith('model.ckpt'))
    real = os.path.samefile

    def rotated(a, b):
        if b.endswith('model.ckpt-1.index'):
            raise FileNotFoundError(errno.ENOENT, 'No such file or directory', b)
        return real(a, b)
    monkeypatch.setattr(os.path, 'samefile', rotated)
    protected.check(str(tmp_path / 'out.json'), '--json')  # no error: nothing to protect
    monkeypatch.setattr(os.path, 'samefile', real)
    os.link(str(run / 'model.ckpt-1.index'), str(tmp_path / 'hard.json'))
    with pytest.raises(UsageError, match='which this command reads'):
        protected.check(str(tmp_path / 'hard.json'), '--json')


def test_temporary_files_are_unique_exclusive_and_never_follow_a_link(tmp_path):
    target = str(tmp_path / 'out.pb')
    os.mkdir(target + '.tmp')  # the old fixed name, taken: no longer in the way
    os.symlink(str(tmp_path / 'victim'), str(tmp_path / '.out.pb.x.tmp'))
    first, second = files.Output(target, '--output'), files.Output(target, '--output')
    assert first.tmp != second.tmp and not os.path.islink(first.tmp)
    assert first.commit(b'one') == 3 and second.commit(b'two') == 3
    with open(target, 'rb') as f:
        assert f.read() == b'two'
    assert not os.path.exists(str(tmp_path / 'victim'))
    assert sorted(os.listdir(str(tmp_path))) == ['.out.pb.x.tmp', 'out.pb', 'out.pb.tmp']


# -- 3. every file read is a regular file of a bounded size ----------------------------------

@pytest.mark.parametrize('make, reason', [
    (lambda p: os.symlink('/dev/zero', p), 'a character device'),
    (lambda p: os.mkfifo(p), 'a FIFO'),
    (lambda p: os.truncate(p, 2 << 20) if open(p, 'w').close() is None else None,
     '2097152 bytes, more than the 1048576 a json file may have here'),
], ids=['dev-zero', 'fifo', 'huge'])
def test_a_schedule_json_that_is_no_small_regular_file_is_refused_unread(
        run_dir, entry, make, reason):
    path = os.path.join(run_dir, 'schedule.json')
    os.remove(path)
    make(path)
    result = entry('train.py', '--model_dir', run_dir, *STEPS, check=False)
    assert_one_line_failure(result, r'%s: unreadable \(%s\)' % (re.escape(path), reason))


@pytest.mark.slow
@pytest.mark.parametrize('which, make, reason', [
    ('graph', lambda p: os.symlink('/dev/zero', p), 'a character device'),
    ('graph', lambda p: os.mkfifo(p), 'a FIFO'),
    ('image', lambda p: os.symlink('/dev/zero', p), 'a character device'),
    ('image', lambda p: os.mkfifo(p), 'a FIFO'),
    ('image', lambda p: os.truncate(p, 65 << 20) if open(p, 'w').close() is None else None,
     '68157440 bytes, more than the 67108864 a image file may have'),
], ids=['graph-dev-zero', 'graph-fifo', 'image-dev-zero', 'image-fifo', 'image-huge'])
def test_predict_reads_only_regular_files_of_a_bounded_size(
        exported_pb, tmp_path, capfd, which, make, reason):
    bad = str(tmp_path / 'bad')
    make(bad)
    args = [bad, exported_pb] if which == 'graph' else [exported_pb, bad]
    capfd.readouterr()
    code = call_main('export.py', '--predict', *args)
    err = capfd.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1, err
    assert re.match(r'error: %s: .*%s' % (re.escape(bad), reason), err), err


@pytest.fixture(scope='module')
def exported_pb(trained_run, tmp_path_factory):
    pb = str(tmp_path_factory.mktemp('pb') / 'digits.pb')
    assert call_main('export.py', '--model_dir', trained_run.model_dir, '--output', pb) == 0
    return pb


def test_a_checkpoint_file_that_is_no_regular_file_is_damaged_not_read(run_dir, entry):
    data_file = os.path.join(run_dir, 'model.ckpt-40.data-00000-of-00001')
    os.remove(data_file)
    os.mkfifo(data_file)
    out = entry('eval.py', '--model_dir', run_dir).stdout
    assert 'model.ckpt-40 is damaged (model.ckpt-40.data-00000-of-00001 is a FIFO)' in out, out
    assert re.search(r'model\.ckpt-20 \(step 20\)', out), out


# -- 4. every size is bounded before it reaches TensorFlow -----------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--depth', '2000000002'], r'--depth: expected an integer from 1 to 3000'),
    (['--growth_rate', '2000000000'], r'--growth_rate: expected an integer from 1 to 1024'),
    (['--image_size', '2000000000'], r'--image_size: expected an integer from 1 to 4096'),
    (['--batch_size', '100000'], r'--batch_size: expected an integer from 1 to 65536'),
    (['--seed', '100000000000000000000'], r'--seed: expected an integer from 0 to 2147483647'),
    (['--seed', '-1'], r'--seed: expected an integer from 0'),
])
def test_sizes_beyond_their_bound_are_usage_errors(entry, tmp_path, argv, message):
    result = entry('train.py', '--model_dir', str(tmp_path / 'run'), *argv, check=False)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not os.path.exists(str(tmp_path / 'run'))


@pytest.mark.parametrize('record, message', [
    ('{"batch_size": 1e400, "lr_schedule": "step", "workers": 1}', r'1e400 is too large'),
    ('{"batch_size": 32, "lr_schedule": "step", "workers": 0}', r'workers 0 is not an integer '
                                                                r'in \[1, 65536\]'),
    ('{"batch_size": true, "lr_schedule": "step", "workers": 1}', r'batch_size True is not'),
    ('{"batch_size": 32, "lr_schedule": "warp", "workers": 1}', r"lr_schedule 'warp' is none "
                                                                r"of step, cosine"),
    ('{"batch_size": 32, "lr_schedule": "step", "workers": NaN}', r'NaN is not a number JSON'),
    ('[32]', r'not a JSON object'),
], ids=['overflow', 'no-workers', 'boolean', 'schedule', 'nan', 'list'])
def test_a_tampered_schedule_json_is_named_not_used(run_dir, entry, record, message):
    path = os.path.join(run_dir, 'schedule.json')
    with open(path, 'w') as f:
        f.write(record)
    before = tree(run_dir)
    result = entry('train.py', '--model_dir', run_dir, *STEPS + ['--batch_size', '16'],
                   check=False)
    assert_one_line_failure(result, r'%s: unreadable \(.*%s' % (re.escape(path), message))
    assert tree(run_dir) == before


# -- 5, 6. one writer: checked before the work, whole or nothing -----------------------------

@pytest.mark.slow
def test_an_output_that_cannot_be_written_is_named_before_the_work(trained_run, tmp_path, entry):
    model_dir, out = trained_run.model_dir, str(tmp_path)
    for flag, path, message in (
            ('--output', out, 'a directory'),
            ('--output', '/', 'a directory'),
            ('--output', os.path.join(out, 'missing', 'x.pb'), 'no directory .*missing to write'),
            ('--saved_model', model_dir, 'already exists; give a new directory'),
            ('--json', out, 'a directory')):
        script = 'eval.py' if flag == '--json' else 'export.py'
        result = entry(script, '--model_dir', model_dir, flag, path, check=False)
        assert_one_line_failure(result, '%s %s: %s' % (flag, re.escape(path), message))
    clash = entry('export.py', '--model_dir', model_dir, '--output', os.path.join(out, 'same'),
                  '--saved_model', os.path.join(out, 'same'), check=False)
    assert_one_line_failure(clash, r'--output and --saved_model are both .*same')
    assert os.listdir(out) == [] and not os.path.exists('/.tmp')


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only) with `room` bytes left free: (directory, fill(room))."""
    mount = str(tmp_path / 'disk')
    os.mkdir(mount)
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mount],
                      stderr=subprocess.DEVNULL).returncode:
        pytest.skip('mounting a tmpfs needs root')
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', mount])


def _fill(directory, leave):
    """Fills `directory`'s file system until about `leave` bytes are left."""
    with open(os.path.join(directory, 'filler'), 'wb') as f:
        try:
            while shutil.disk_usage(directory).free > leave:
                f.write(bytes(4096))
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_full_or_read_only_disk_leaves_no_partial_output(trained_run, small_disk, entry):
    _fill(small_disk, 16 << 10)
    target, saved = os.path.join(small_disk, 'x.pb'), os.path.join(small_disk, 'sm')
    for flag, path in (('--output', target), ('--saved_model', saved)):
        for attempt in range(2):  # a failed export does not block the next
            result = entry('export.py', '--model_dir', trained_run.model_dir, flag, path,
                           check=False)
            assert_one_line_failure(result, r'%s %s: (saved_model\.pb; )?No space left on '
                                             r'device; nothing written' % (flag, re.escape(path)))
            assert os.listdir(small_disk) == ['filler'], attempt
    subprocess.run(['mount', '-o', 'remount,ro', small_disk], check=True)
    result = entry('export.py', '--model_dir', trained_run.model_dir, '--output', target,
                   check=False)
    assert_one_line_failure(result, r'--output %s: cannot write in .*Read-only file system'
                            % re.escape(target))


def test_a_directory_where_a_run_writes_its_files_is_refused_before_anything_is_written(
        run_dir, entry):
    for name, message in (('config.json', r': unreadable \(a directory\)'),
                          ('schedule.json', r': unreadable \(a directory\)'),
                          ('checkpoint', ' is a directory, where a training run writes its '
                                         'checkpoint')):
        path = os.path.join(run_dir, name)
        os.rename(path, path + '.moved')
        os.mkdir(path)
        before = tree(run_dir)
        result = entry('train.py', '--model_dir', run_dir, *STEPS, check=False)
        assert_one_line_failure(result, re.escape(path) + message)
        assert tree(run_dir) == before and not [n for n in os.listdir(run_dir)
                                                if n.endswith('.tmp')]
        os.rmdir(path)
        os.rename(path + '.moved', path)


def test_output_directory_is_renamed_into_place_only_when_whole(tmp_path):
    target = str(tmp_path / 'sm')
    output = files.OutputDirectory(target, '--saved_model')
    with open(os.path.join(output.tmp, 'saved_model.pb'), 'wb') as f:
        f.write(b'x')
    assert not os.path.exists(target)
    error = output.failed(OSError(errno.ENOSPC, 'No space left on device'))
    assert isinstance(error, OutputError) and os.listdir(str(tmp_path)) == []
    with pytest.raises(UsageError, match='already exists'):
        os.mkdir(target)
        files.OutputDirectory(target, '--saved_model')


# -- 7. standard output: a reader that leaves, an output that cannot be written --------------

def _shell(command, cwd=ROOT):
    return subprocess.run(['bash', '-c', 'set -o pipefail; ' + command], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=child_environment())


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly_and_an_unwritable_output_is_an_error(
        trained_run, exported_pb, tmp_path):
    _write_png(str(tmp_path / 'd.png'), np.zeros((8, 8, 1), np.uint8))
    eval_py, export_py = (os.path.join(ROOT, n) for n in ('eval.py', 'export.py'))
    # More lines than a pipe holds (64 KiB): the writer meets the closed pipe, however fast.
    head = _shell('%s %s --predict %s %s | head -1' % (PYTHON, export_py, exported_pb,
                                                        ' '.join(['d.png'] * 4000)),
                  cwd=str(tmp_path))
    assert head.returncode == 141 and head.stderr == '', head.stderr[-2000:]
    assert head.stdout.startswith('d.png: ') and head.stdout.count('\n') == 1
    closed = _shell('%s %s --model_dir %s >&-' % (PYTHON, eval_py, trained_run.model_dir))
    assert_one_line_failure(closed, r'standard output is closed; nothing was done')
    full = _shell('%s %s --model_dir %s > /dev/full' % (PYTHON, eval_py, trained_run.model_dir))
    assert_one_line_failure(full, r'standard output: No space left on device; the output is '
                                  r'incomplete')


def test_an_unprintable_image_path_stays_on_its_line(exported_pb, tmp_path, entry):
    image = str(tmp_path / 'two\nlines.png')
    _write_png(image, np.zeros((8, 8, 1), np.uint8))
    out = entry('export.py', '--predict', exported_pb, image).stdout
    assert out.count('\n') == 1 and out.startswith(ascii(image) + ': '), out


# -- 8. images are mapped into the range the model was trained on ----------------------------

def _write_png(path, pixels):
    with tf.Graph().as_default(), tf.Session() as sess:
        png = sess.run(tf.image.encode_png(pixels))
    with open(path, 'wb') as f:
        f.write(png)


@pytest.mark.slow
def test_predict_maps_ordinary_8_bit_images_into_the_models_pixel_range(exported_pb, tmp_path):
    digits = data.spec('digits')
    predictor = Predictor(exported_pb)
    assert predictor.pixel_max == digits.pixel_max == 16
    raw = digits.test_images[:30]
    paths = []
    for i, image in enumerate(raw):  # as any image program saves them: 0 black, 255 white
        paths.append(str(tmp_path / ('digit%d.png' % i)))
        _write_png(paths[-1], np.round(image * 255.0 / 16).astype(np.uint8))
    read = predictor.read(paths)
    assert np.max(np.abs(read - raw)) <= 16 / 255.0
    expected = np.argmax(predictor.logits_of(raw), 1)
    got = np.argmax(predictor.logits_of(read), 1)
    assert np.mean(got == expected) >= 0.9, (got, expected)
