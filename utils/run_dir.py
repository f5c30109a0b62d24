"""What a training run does to its --model_dir before the first write: take the directory for
itself (one writer at a time), prove it writable and large enough, and point TF's checkpoint
index at this directory's own checkpoints."""
import contextlib
import errno
import fcntl
import os
import shutil
import socket

from utils import checkpoints
from utils.errors import TrainingError

LOCK_FILE = 'train.lock'
# The first save writes the meta graph and an events file holding the graph twice (the graph and
# the meta graph, with shapes: ~4x); each later checkpoint has its own meta graph.
GRAPH_COPIES = 6


def check_not_in_use(model_dir):
    """TrainingError now, before the graph is built, if another run holds `model_dir` (`claim`
    is what keeps it; this only fails early and writes nothing)."""
    try:
        fd = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return  # no lock file: no run has claimed the directory yet
    try:
        _lock(fd, model_dir)
    finally:
        os.close(fd)


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
    path (none: a new run, which an index of another directory's checkpoints must not restore). TrainingError, with nothing written, when another run holds the directory."""
    try:
        os.makedirs(model_dir, exist_ok=True)
        fd = os.open(os.path.join(model_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise TrainingError('cannot write to --model_dir %s: %s' % (model_dir, e.strerror or e))
    try:
        _lock(fd, model_dir)
        os.ftruncate(fd, 0)
        os.write(fd, ('pid %d on %s' % (os.getpid(), socket.gethostname())).encode())
        _probe(model_dir)
        check_free_space(model_dir, variables, graph_bytes)
        checkpoints.write_index(model_dir, [
            p for p in checkpoints.scan(model_dir, verify=False).complete
            if resume and checkpoints.step_of(p) <= checkpoints.step_of(resume)])
        yield
    finally:
        os.close(fd)


def _probe(model_dir):
    """Writes, syncs and removes a file: a read-only or broken disk fails here, not mid-run."""
    probe = os.path.join(model_dir, '.write_probe.%d' % os.getpid())
    try:
        with open(probe, 'wb') as f:
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
