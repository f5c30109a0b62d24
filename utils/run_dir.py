"""What a training run does to its --model_dir before the first write: take the directory for
itself (one writer at a time), prove it writable and large enough, point TF's checkpoint
index at this directory's own checkpoints, and keep a resumed run on the schedule it started."""
import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile

from utils import checkpoints, files
from utils.checkpoints import LOCK_FILE, SCHEDULE_FILE
from utils.config import MAX_BATCH, MAX_WORKERS
from utils.errors import TrainingError
from utils.optimizer import SCHEDULES
# The first save writes the meta graph and an events file holding the graph twice (the graph and
# the meta graph, with shapes: ~4x); each later checkpoint has its own meta graph.
GRAPH_COPIES = 6


def check_not_in_use(model_dir):
    """TrainingError now, before the graph is built, if another run holds `model_dir` (`claim`
    is what keeps it; this only fails early and writes nothing)."""
    try:
        fd = _open_lock(model_dir, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return  # no lock file: no run has claimed the directory yet
    try:
        _lock(fd, model_dir)
    finally:
        os.close(fd)


def schedule(batch_size, workers, lr_schedule):
    """What fixes a run's steps and learning rates besides its length: the global batch (steps
    per epoch) and the schedule's shape."""
    return dict(batch_size=batch_size, workers=workers, lr_schedule=lr_schedule)


def check_schedule(model_dir, current):
    """TrainingError, before anything is written, if the run in `model_dir` was started with
    another global batch or schedule than `current` (a `schedule()`): resuming would silently
    rescale the target step and the learning rates. Runs of earlier versions have no record."""
    path = os.path.join(model_dir, SCHEDULE_FILE)
    try:
        saved = _read_schedule(path)
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TrainingError('%s: unreadable (%s); it records how the run was started: restore '
                            'it or use a new --model_dir' % (path, getattr(e, 'strerror', None)
                                                             or e))
    if saved['batch_size'] * saved['workers'] != current['batch_size'] * current['workers']:
        raise TrainingError(
            '%s was started with a global batch of %d (--batch_size %d x %d workers), this run\'s '
            'is %d (%d x %d): its steps and learning rates would rescale. Resume with '
            '--batch_size %d on %d workers, or use a new --model_dir' % (
                model_dir, saved['batch_size'] * saved['workers'], saved['batch_size'],
                saved['workers'], current['batch_size'] * current['workers'],
                current['batch_size'], current['workers'], saved['batch_size'],
                saved['workers']))
    if saved['lr_schedule'] != current['lr_schedule']:
        raise TrainingError('%s was started with --lr_schedule %s, this run asks for %s: resume '
                            'with --lr_schedule %s, or use a new --model_dir' % (
                                model_dir, saved['lr_schedule'], current['lr_schedule'],
                                saved['lr_schedule']))


def _read_schedule(path):
    """schedule.json's record, every value checked (ValueError names the first that is off)."""
    saved = files.read_json(path)
    if not isinstance(saved, dict):
        raise ValueError('not a JSON object')
    record = {}
    for name, most in (('batch_size', MAX_BATCH), ('workers', MAX_WORKERS)):
        value = saved[name]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError('%s %r is not an integer in [1, %d]' % (name, value, most))
        record[name] = value
    if saved['lr_schedule'] not in SCHEDULES:
        raise ValueError('lr_schedule %r is none of %s' % (saved['lr_schedule'],
                                                          ', '.join(SCHEDULES)))
    record['lr_schedule'] = saved['lr_schedule']
    return record


def record_schedule(model_dir, current):
    files.replace_file(os.path.join(model_dir, SCHEDULE_FILE), json.dumps(current,
                                                                           sort_keys=True))


def _open_lock(model_dir, flags):
    """The lock file's descriptor, opened without following a link (a link planted there
    would make us write where it points) nor waiting on a FIFO; TrainingError naming it if it
    is not a regular file."""
    path = os.path.join(model_dir, LOCK_FILE)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise TrainingError('%s is a symbolic link, where this run keeps its lock: remove it '
                                '(nothing was written)' % path)
        if e.errno == errno.EISDIR:
            raise TrainingError('%s is a directory, where this run keeps its lock: move it away'
                                % path)
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise TrainingError('%s is %s, where this run keeps its lock: move it away' % (
            path, files.describe(mode)))
    return fd


def _lock(fd, model_dir):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        os.lseek(fd, 0, os.SEEK_SET)
        holder = os.read(fd, 200).decode('utf-8', 'replace').strip() or 'another process'
        raise TrainingError('%s is in use by another training run (%s); wait for it to end or '
                            'use another --model_dir' % (model_dir, holder))


@contextlib.contextmanager
def claim(model_dir, variables, graph_bytes, resume=None):
    """A context in which this process is `model_dir`'s only writer: creates it, takes its lock
    (flock: the kernel releases it when the process dies, so a killed run never blocks the
    next), checks that a file can be written and synced and that the disk holds the run's
    first saves, and rewrites the index to name the checkpoints up to `resume` by relative
    path (none: a new run, which an index of another directory's checkpoints must not
    restore). TrainingError when another run holds the directory, or it is not writable or too
    small: then it is left as it was found (no lock file, not even the directory)."""
    checkpoints.check_replaceable(model_dir)
    lock = os.path.join(model_dir, LOCK_FILE)
    made = not os.path.isdir(model_dir)
    try:
        os.makedirs(model_dir, exist_ok=True)
        created = not os.path.lexists(lock)
        fd = _open_lock(model_dir, os.O_RDWR | os.O_CREAT)
    except OSError as e:
        raise TrainingError('cannot write to --model_dir %s: %s' % (model_dir, e.strerror or e))
    try:
        try:
            _lock(fd, model_dir)
        except TrainingError:
            created = False  # the other run's lock file
            raise
        os.ftruncate(fd, 0)
        os.write(fd, ('pid %d on %s' % (os.getpid(), socket.gethostname())).encode())
        _probe(model_dir)
        check_free_space(model_dir, variables, graph_bytes)
        checkpoints.write_index(model_dir, [
            p for p in checkpoints.scan(model_dir, verify=False).complete
            if resume and checkpoints.step_of(p) <= checkpoints.step_of(resume)])
    except BaseException:
        os.close(fd)
        if created:  # a refused run leaves the directory as it found it
            os.remove(lock)
            if made:
                os.rmdir(model_dir)
        raise
    try:
        yield
    finally:
        os.close(fd)


def _probe(model_dir):
    """Writes, syncs and removes a file: a read-only or broken disk fails here, not mid-run."""
    try:
        fd, probe = tempfile.mkstemp(prefix='.write_probe.', dir=model_dir)
        with os.fdopen(fd, 'wb') as f:
            f.write(b'\0' * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise TrainingError('cannot write to --model_dir %s: %s' % (model_dir, e.strerror or e))


def check_free_space(model_dir, variables, graph_bytes):
    """TrainingError unless `model_dir`'s disk holds two checkpoints of `variables` (a new one
    is written in full before the oldest is deleted) and the copies of the graph the first saves
    write (`GRAPH_COPIES` x `graph_bytes`)."""
    weights = sum(v.shape.num_elements() * v.dtype.base_dtype.size for v in variables)
    need = 2 * weights + GRAPH_COPIES * graph_bytes
    free = shutil.disk_usage(model_dir).free
    if free < need:
        raise TrainingError('%s: %.1f MiB free, the first checkpoints of this run need %.1f MiB '
                            '(weights %.1f MiB twice, the graph %.1f MiB %d times)' % (
                                model_dir, free / 2.0 ** 20, need / 2.0 ** 20,
                                weights / 2.0 ** 20, graph_bytes / 2.0 ** 20, GRAPH_COPIES))
