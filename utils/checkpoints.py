"""Finding a run directory's checkpoints and checking them: complete and readable, and fitting a
graph before anything restores them (with a one-line reason if not).

A run directory's checkpoints are found from its files, not from TF's `checkpoint` index: the
index may hold another directory's absolute paths (a copied or moved run), or be damaged, and
trusting it restored or deleted the wrong files, or started afresh over intact checkpoints.
"""
import collections
import os
import re

from models.compat import tf
from utils import files
from utils.errors import CheckpointError, first_line
from utils.log import LOG
PREFIX = 'model.ckpt'
INDEX_FILE = 'checkpoint'  # TF's name for the index of a directory's checkpoints
CONFIG_FILE = 'config.json'  # the model, saved by train.py (utils.config.ModelConfig)
LOCK_FILE = 'train.lock'  # held by the run that writes the directory (utils.run_dir)
SCHEDULE_FILE = 'schedule.json'  # how the run started (utils.run_dir.check_schedule)
# Every name train.py writes in a run directory: what eval.py and export.py never write over.
_RUN_FILE = re.compile(r'(%s-\d+\..+|%s|%s|%s|%s|events\.out\.tfevents\..+|\..+\.tmp|'
                       r'\.write_probe\..+)$' % tuple(map(re.escape, (
                           PREFIX, INDEX_FILE, LOCK_FILE, SCHEDULE_FILE, CONFIG_FILE))))
_LAYER = re.compile(r'/denseblock(\d+)/denselayer(\d+)/')
_FILE = re.compile(r'^%s-(\d+)\.(?:index|data-(\d+)-of-(\d+))$' % re.escape(PREFIX))

Scan = collections.namedtuple('Scan', 'complete damaged')
Scan.__doc__ = """A directory's checkpoints: `complete` paths oldest first, and `damaged`
{path: reason} for those whose files are incomplete or unreadable."""


def scan(model_dir, verify=True):
    """The `Scan` of `model_dir`. With `verify`, the newest complete checkpoint is read in full
    (CRCs) and, if that fails, counted as damaged and the next newest is read instead."""
    found = collections.defaultdict(list)  # step -> _FILE matches
    for name in (os.listdir(model_dir) if model_dir and os.path.isdir(model_dir) else ()):
        match = _FILE.match(name)
        if match:
            found[int(match.group(1))].append(match)
    complete, damaged = [], {}
    for step in sorted(found):
        path = os.path.join(model_dir, '%s-%d' % (PREFIX, step))
        shards = [m for m in found[step] if m.group(2) is not None]
        expected = int(shards[0].group(3)) if shards else 1
        odd = _not_regular(model_dir, found[step])
        if odd:
            damaged[path] = odd
        elif len(shards) == len(found[step]):
            damaged[path] = 'no .index file'
        elif len(shards) != expected:
            damaged[path] = '%d of %d data files' % (len(shards), expected)
        else:
            complete.append(path)
    while verify and complete:
        reason = _unreadable(complete[-1])
        if not reason:
            break
        damaged[complete.pop()] = reason
    return Scan(complete, damaged)


def is_run_file(name):
    """Whether a file called `name` in a run directory is one of the run's own."""
    return bool(_RUN_FILE.match(name))


def protected(model_dir, checkpoint=None, *inputs):
    """The `files.Protected` of a command that only reads run directory `model_dir` (and the
    directory of `checkpoint`, if it lies elsewhere) and the files `inputs`."""
    run_dirs = [model_dir] + ([os.path.dirname(checkpoint)] if checkpoint else [])
    return files.Protected(run_dirs, inputs, is_run_file)


def _not_regular(model_dir, matches):
    """Why one of a checkpoint's files is no regular file (TensorFlow would wait on a FIFO, or
    read a device without end), or None."""
    for match in matches:
        try:
            files.check_file(os.path.join(model_dir, match.group(0)), 'checkpoint')
        except files.Unreadable as e:
            return '%s is %s' % (match.group(0), e.strerror)
        except OSError as e:
            return '%s: %s' % (match.group(0), e.strerror or e)
    return None


def _unreadable(path):
    """Why checkpoint `path` cannot be read in full, or None if it can."""
    try:
        reader = tf.train.NewCheckpointReader(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, RuntimeError, OSError) as e:
        return 'unreadable: %s' % first_line(e)
    return None


def latest_checkpoint(model_dir, report=True):
    """The newest intact checkpoint in `model_dir`, or None if it has no checkpoint files at all.
    Newer damaged ones are named (warnings, with `report`); CheckpointError if there are
    checkpoint files but none is intact (never a silent fresh start over them)."""
    found = scan(model_dir)
    latest = found.complete[-1] if found.complete else None
    newer = sorted((p for p in found.damaged if latest is None or step_of(p) > step_of(latest)),
                   key=step_of)
    if newer and latest is None:
        raise CheckpointError('%s: no intact checkpoint (%s); move the damaged files away or use '
                              'another --model_dir' % (model_dir, '; '.join(
                                  '%s: %s' % (os.path.basename(p), found.damaged[p])
                                  for p in newer)))
    if report:
        for path in newer:
            LOG.warning('warning: %s is damaged (%s); using %s', path, found.damaged[path],
                        latest)
        note = _index_note(model_dir, latest, found.damaged)
        if note:
            LOG.warning('warning: %s', note)
    return latest


def step_of(path):
    return int(path.rsplit('-', 1)[1])


def _index_note(model_dir, latest, damaged):
    """Why `model_dir`'s index does not name `latest` (it is not used either way), or None."""
    index = os.path.join(model_dir, INDEX_FILE)
    if latest is None or not os.path.lexists(index):
        return None
    try:  # a FIFO would block the reader, /dev/zero feed it without end
        if os.path.islink(index):
            raise files.Unreadable(index, 'a symbolic link')
        files.check_file(index, 'index')
    except OSError as e:
        return '%s is %s; using %s, found in the directory' % (index, e.strerror, latest)
    try:
        state = tf.train.get_checkpoint_state(model_dir)
    except (UnicodeDecodeError, ValueError, OSError, tf.errors.OpError):  # binary, garbled
        state = None
    named = state.model_checkpoint_path if state else ''
    if not named:
        return '%s is damaged; using %s, found in the directory' % (index, latest)
    if os.path.dirname(os.path.abspath(named)) != os.path.abspath(model_dir):
        return ('%s names %s, in another directory (a copied or moved run?); using %s' % (
            index, named, latest))
    if named not in damaged and _FILE.match(os.path.basename(named) + '.index') and \
            step_of(named) > step_of(latest):
        return '%s names %s, which is missing; using %s' % (index, named, latest)
    return None


def check_replaceable(model_dir):
    """CheckpointError if a directory stands where a run writes one of its files (the index,
    config.json, schedule.json, the lock): checked before a run writes anything, so that it
    does not fail halfway (TF's saver at the first save, config.json after the index)."""
    for name in (INDEX_FILE, CONFIG_FILE, SCHEDULE_FILE, LOCK_FILE):
        path = os.path.join(model_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            raise CheckpointError('%s is a directory, where a training run writes its %s: move '
                                  'it away' % (path, name))


def write_index(model_dir, checkpoints):
    """Rewrites `model_dir`'s index to name `checkpoints` (oldest first) relative to the
    directory, so that TF's restore and its deletion of old checkpoints stay inside it; with
    none, removes the index. A symlink or FIFO there is replaced (see `check_index_path`)."""
    path = os.path.join(model_dir, INDEX_FILE)
    if not checkpoints:
        if os.path.lexists(path):
            os.remove(path)
        return
    names = [os.path.basename(p) for p in checkpoints]
    lines = ['model_checkpoint_path: "%s"' % names[-1]] + [
        'all_model_checkpoint_paths: "%s"' % n for n in names]
    files.replace_file(path, '\n'.join(lines) + '\n')


def find_checkpoint(model_dir, checkpoint=None):
    """The given checkpoint path (read in full first), else the latest intact one in
    `model_dir`; CheckpointError naming it if it is missing or damaged, or if there is none."""
    if checkpoint:
        if not tf.train.checkpoint_exists(checkpoint):
            raise CheckpointError('%s: no such checkpoint' % checkpoint)
        reason = _unreadable(checkpoint)
        if reason:
            raise CheckpointError('%s: damaged checkpoint (%s)' % (checkpoint, reason))
        return checkpoint
    latest = latest_checkpoint(model_dir)
    if not latest:
        raise CheckpointError('%s: no checkpoint found (train first, or pass --checkpoint)'
                              % model_dir)
    return latest


def rotated_away(checkpoint):
    """The newest intact checkpoint of `checkpoint`'s directory if `checkpoint` is gone and that
    one is newer (a training run deleted it to keep its last few), else None."""
    if os.path.exists(checkpoint + '.index') or not _FILE.match(
            os.path.basename(checkpoint) + '.index'):
        return None
    latest = latest_checkpoint(os.path.dirname(checkpoint), report=False)
    return latest if latest and step_of(latest) > step_of(checkpoint) else None


def checkpoint_step(checkpoint):
    """The global step `checkpoint` was saved at; 0 for None."""
    return int(tf.train.load_variable(checkpoint, 'global_step')) if checkpoint else 0


def check_compatible(checkpoint, variables, why=''):
    """Raises CheckpointError naming the first variable missing from `checkpoint` or shaped
    differently there; `why`, if given, ends the message (e.g. how the flags changed the model)."""
    try:
        saved = dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError('%s: unreadable checkpoint (%s)' % (checkpoint, first_line(e)))
    why = ' (%s)' % why if why else ''
    for var in variables:  # in build order: the first mismatch is the most telling
        name, shape = var.op.name, var.shape.as_list()
        if name not in saved:
            raise CheckpointError('%s was written by another architecture: it has no variable %s'
                                  ' %s%s' % (checkpoint, name, shape, why))
        if list(saved[name]) != shape:
            raise CheckpointError('%s was written by another architecture: %s is %s there, %s '
                                  'in this model%s' % (checkpoint, name, list(saved[name]), shape,
                                                       why))


def check_layer_counts(checkpoint, nb_layers, why=''):
    """CheckpointError naming the first dense block whose layer count in `checkpoint` differs
    from `nb_layers` (per block); read from the variable names alone, without a graph."""
    try:
        names = [name for name, _ in tf.train.list_variables(checkpoint)]
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError('%s: unreadable checkpoint (%s)' % (checkpoint, first_line(e)))
    counts = collections.Counter()
    for block, layer in set(m.groups() for m in map(_LAYER.search, names) if m):
        counts[int(block)] = max(counts[int(block)], int(layer))
    if not counts:
        return  # not a DenseNet of this package: the shape check names what differs
    for block, layers in enumerate(nb_layers, 1):
        if counts[block] != layers:
            raise CheckpointError(
                '%s was written by another architecture: dense block %d has %d layers there, '
                '%d in this model%s' % (checkpoint, block, counts[block], layers,
                                        ' (%s)' % why if why else ''))
