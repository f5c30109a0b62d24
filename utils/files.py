"""Every file the commands read or write themselves goes through here (docs/operations.md,
"Files read and written"):

- **Reads** are of regular files of a bounded size, checked before a byte is read: a FIFO, a
  device (`/dev/zero`), a directory or a file larger than its kind may be is refused with
  `Unreadable` (an OSError, so `e.strerror` is the one-line reason), never read into memory or
  waited on. Files that a library opens itself (h5py, TensorFlow) are checked with `check_file`.
- **Writes** go to a unique temporary file beside the target, created exclusively (O_EXCL,
  so neither a planted link nor a second writer is followed or shared), renamed over the
  target only when complete and synced, and removed on every way out: a target is either as
  it was or whole. `Output` and `OutputDirectory` are made before the expensive work, so an
  output that cannot be written is named before anything is computed.
- **Protected files**: an output of eval.py or export.py may not land on a file of a run
  directory the command reads, nor on any file it reads, however the path is spelled
  (relative, `..`, symlinks, hard links): `Protected`.
"""
import errno
import json
import os
import shutil
import stat
import tempfile

from utils.errors import OutputError, UsageError

MIB, GIB = 1 << 20, 1 << 30
# The most bytes each kind of file may have (far above any real one, far below memory).
LIMITS = dict(json=1 * MIB,           # config.json, schedule.json (~200 bytes)
              index=1 * MIB,          # TF's checkpoint index (a line per checkpoint)
              graph=2 * GIB - 1,      # a frozen GraphDef: protobuf cannot parse more
              image=64 * MIB,         # one PNG/JPEG/GIF/BMP to classify
              keras=4 * GIB,          # a Keras .h5 (DenseNet-201's: 81 MB)
              checkpoint=256 * GIB)   # one file of a checkpoint (TensorFlow reads it)
_KINDS = ((stat.S_ISDIR, 'a directory'), (stat.S_ISFIFO, 'a FIFO'),
          (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
          (stat.S_ISSOCK, 'a socket'))


class Unreadable(OSError):
    """A file that is not a regular file, or larger than its kind may be."""

    def __init__(self, path, reason):
        super(Unreadable, self).__init__(errno.EINVAL, reason, path)


def describe(mode):
    """'a FIFO', 'a directory', ... for a file's `st_mode` that is no regular file."""
    return next((name for test, name in _KINDS if test(mode)), 'not a regular file')


def check_file(path, kind):
    """The size of `path` if it is (or links to) a regular file of at most LIMITS[kind] bytes;
    Unreadable otherwise (FileNotFoundError if there is nothing)."""
    info = os.stat(path)
    return _checked(path, info, kind)


def _checked(path, info, kind):
    if not stat.S_ISREG(info.st_mode):
        raise Unreadable(path, describe(info.st_mode))
    if info.st_size > LIMITS[kind]:
        raise Unreadable(path, '%d bytes, more than the %d a %s file may have here' % (
            info.st_size, LIMITS[kind], kind))
    return info.st_size


def read_bytes(path, kind):
    """The contents of regular file `path`, at most LIMITS[kind] bytes (checked on the open file
    before reading, and again while reading: a file that grows is not followed)."""
    # O_NONBLOCK: opening a FIFO does not wait for a writer, so fstat can refuse it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, 'O_CLOEXEC', 0))
    try:
        _checked(path, os.fstat(fd), kind)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, 'rb') as f:
        data = f.read(LIMITS[kind] + 1)
    if len(data) > LIMITS[kind]:
        raise Unreadable(path, 'grew past the %d bytes a %s file may have' % (LIMITS[kind], kind))
    return data


def read_json(path, kind='json'):
    """The JSON value in `path` (read with `read_bytes`); ValueError if it is not JSON. Numbers
    too large for a float (1e400) are refused, not read as infinity."""
    return json.loads(read_bytes(path, kind).decode('utf-8'), parse_constant=_no_constant,
                      parse_float=_finite)


def _no_constant(name):
    raise ValueError('%s is not a number JSON allows' % name)


def _finite(text):
    value = float(text)
    if value in (float('inf'), float('-inf')):
        raise ValueError('%s is too large' % text)
    return value


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would have given a new file (mkstemp gives 0600)


def _temporary(path, make=tempfile.mkstemp):
    """A new temporary file (or, with `make=tempfile.mkdtemp`, directory) beside `path`, named
    after it, created exclusively: (fd, name) or name."""
    return make(prefix='.%s.' % os.path.basename(path), suffix='.tmp',
                dir=os.path.dirname(os.path.abspath(path)))


def _remove(path):
    try:
        (shutil.rmtree if os.path.isdir(path) and not os.path.islink(path) else os.remove)(path)
    except OSError:
        pass


def replace_file(path, data):
    """Writes `data` (bytes or str) to `path` atomically (a unique temporary file beside it,
    synced, renamed over it); OSError as the system gives it, the temporary file removed."""
    fd, tmp = _temporary(path)
    os.close(fd)
    try:
        _fill(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _fill(tmp, data):
    """Writes `data` (bytes, or str as UTF-8) into temporary file `tmp`, synced, with the mode
    open() would have given a new file; returns its size."""
    data = data if isinstance(data, bytes) else data.encode('utf-8')
    # Reopened without following a link: a link planted in its place is not written through.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW), 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), _MODE)
    return len(data)


class Protected(object):
    """The files a command only reads: those of its run directories that `run_file(name)` says
    belong to a run, and any file in `inputs`. `check(path, flag)` refuses an output that would
    land on one, however `path` is spelled."""

    def __init__(self, run_dirs=(), inputs=(), run_file=lambda name: False):
        self.run_dirs = [d for d in run_dirs if d and os.path.isdir(d)]
        self.inputs = [p for p in inputs if p and os.path.exists(p)]
        self.run_file = run_file

    def check(self, path, flag):
        real = os.path.realpath(path)
        for directory in self.run_dirs:
            if os.path.dirname(real) == os.path.realpath(directory) and \
                    self.run_file(os.path.basename(real)):
                raise UsageError('%s %s: a file of the run directory %s, which this command only '
                                 'reads; write elsewhere' % (flag, path, directory))
        if not os.path.exists(path):
            return
        for other in self.inputs + [os.path.join(d, name) for d in self.run_dirs
                                    for name in os.listdir(d) if self.run_file(name)]:
            try:
                same = os.path.samefile(path, other)  # a hard link, a bind mount
            except OSError:  # gone meanwhile (a training run rotating its checkpoints)
                continue
            if same:
                raise UsageError('%s %s is %s, which this command reads; write elsewhere' % (
                    flag, path, other))


def _parent(path, flag):
    """The directory `path` would be written in; UsageError if it is not one."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise UsageError('%s %s: a directory (give a file name to write)' % (flag, path))
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError('%s %s: no directory %s to write it in' % (flag, path, parent))
    return parent


class Output(object):
    """An output file, reserved before the work that fills it: its temporary file is created
    now (UsageError naming `flag` if it cannot be: no directory, read-only, not writable);
    `commit(data)` fills it and renames it over `path` (OutputError, nothing left behind, if
    the disk fills); leaving a `with` block without a commit removes it."""

    def __init__(self, path, flag, protected=None):
        (protected or Protected()).check(path, flag)
        parent = _parent(path, flag)
        try:
            fd, self.tmp = _temporary(path)
        except OSError as e:
            raise UsageError('%s %s: cannot write in %s (%s)' % (flag, path, parent,
                                                                 e.strerror or e))
        os.close(fd)
        self.path, self.flag = path, flag

    def commit(self, data):
        """Writes `data` (bytes, or str as UTF-8) to the path; returns its size."""
        try:
            size = _fill(self.tmp, data)
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise OutputError('%s %s: %s; nothing written' % (self.flag, self.path,
                                                              e.strerror or e))
        return size

    def discard(self):
        _remove(self.tmp)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()


class OutputDirectory(Output):
    """An output directory (a SavedModel): `path` must not exist; the work fills `tmp`, a new
    empty directory beside it, and `commit()` renames it into place."""

    def __init__(self, path, flag, protected=None):
        (protected or Protected()).check(path, flag)
        if os.path.lexists(path):
            raise UsageError('%s %s: already exists; give a new directory' % (flag, path))
        parent = _parent(path, flag)
        try:
            self.tmp = _temporary(path, tempfile.mkdtemp)
        except OSError as e:
            raise UsageError('%s %s: cannot write in %s (%s)' % (flag, path, parent,
                                                                 e.strerror or e))
        self.path, self.flag = path, flag

    def commit(self, data=None):
        try:
            if os.path.lexists(self.path):  # made since: not ours to replace
                raise OSError(errno.EEXIST, 'made by something else meanwhile')
            os.rename(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise OutputError('%s %s: %s; nothing written' % (self.flag, self.path,
                                                              e.strerror or e))

    def failed(self, error):
        """The OutputError for `error` (an OSError, or TensorFlow's error, met while filling
        `tmp`), naming the file inside the directory rather than the temporary path."""
        self.discard()
        reason = str(getattr(error, 'strerror', None) or getattr(error, 'message', None) or
                     error).replace(self.tmp + os.sep, '')
        return OutputError('%s %s: %s; nothing written' % (self.flag, self.path, reason))
