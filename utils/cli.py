"""What the entry scripts share: how TensorFlow starts, logging, and one line for each failure a
user can fix."""
import contextlib
import io
import logging
import os
import sys
import tempfile
import traceback
from signal import SIGPIPE

from utils.log import LOG

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _use_bfc_allocator():
    """Host memory from TensorFlow's BFC allocator (the one the benchmarks measure), unless the
    environment says otherwise; read when TensorFlow starts, so set here, before any import of it.
    With the default allocator TF 2.21 trained Fashion-MNIST at half the speed (about 200,000
    page faults a second: the step's buffers went back to the system and were faulted in again,
    when the input came from a Python generator); TF 1.15 and 2.15 run as fast on either. Its cap
    (64 GiB unless set) is raised to the machine's memory where that is larger."""
    os.environ.setdefault('TF_CPU_ALLOCATOR_USE_BFC', 'true')
    try:
        physical = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, ValueError, OSError):  # not a POSIX system: TensorFlow's default
        return
    os.environ.setdefault('TF_CPU_BFC_MEM_LIMIT_IN_MB', str(max(physical >> 20, 1 << 16)))


_use_bfc_allocator()


def run_main(parse_args, run, argv=None):
    """Parses `argv` (default: the command line) with `parse_args` and runs `run(args)`;
    returns the exit code.

    Usage errors are argparse's (one line, exit 2). Our own errors (`utils.errors.Error`) and
    TensorFlow's `OpError`s (e.g. a corrupt record met in training) print `error: ...` on one
    line and exit 1, with the traceback too under `--debug True`. Ctrl-C outside training
    (which stops cleanly, see `utils.hooks.StopSignals`) prints one line and exits 130.
    Anything else is a bug: it propagates with its traceback.
    """
    if sys.stdout is None:  # started with it closed (`>&-`): the next file opened would be fd 1
        print('error: standard output is closed; nothing was done (redirect it to a file or '
              '/dev/null)', file=sys.stderr)
        return 1
    _STDOUT.lost, _STDOUT.reason = False, None
    try:
        code = _run_main(parse_args, run, argv)
    except BaseException as e:
        if not interrupted(e):
            raise
        print('error: interrupted (SIGINT)', file=sys.stderr)
        return 128 + 2
    if _STDOUT.reason:  # a full disk, an I/O error: what was printed is incomplete
        print('error: standard output: %s; the output is incomplete' % _STDOUT.reason,
              file=sys.stderr)
        return code or 1
    return code or (128 + SIGPIPE if _STDOUT.lost else 0)  # a reader that left: quietly


class _STDOUT(object):
    """What became of standard output: `lost` once a write failed (a closed pipe, a full
    disk), `reason` unless the reader merely left. Writes after that go nowhere."""
    lost, reason = False, None


def output_closed():
    """Whether standard output can no longer be written (the reader of a pipe left)."""
    return _STDOUT.lost


def shown(path):
    """`path` as one line shows it: quoted, with escapes, if it holds a newline or another
    unprintable character."""
    return path if path.isprintable() else ascii(path)


def interrupted(error):
    """Whether `error` is what Ctrl-C set off. An interrupt that lands inside one of
    TensorFlow's graph-building context managers (`control_dependencies`, `name_scope`) leaves
    their stacks unbalanced, and their exit raises an AssertionError of their own, chained to
    the KeyboardInterrupt as its `__context__`."""
    while error is not None:
        if isinstance(error, KeyboardInterrupt):
            return True
        error = error.__context__
    return False


def _run_main(parse_args, run, argv):
    try:
        with _stderr_held():
            _quiet_tensorflow()
    except ImportError as e:  # a stack without what TensorFlow needs (models.compat says what)
        return _fail(str(e).splitlines()[0], debug=False)
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # argparse: a usage error or --help, already printed
        return e.code or 0
    setup_logging(args.debug)
    from models.compat import tf
    from utils.errors import Error, first_line
    try:
        run(args)
    except (Error, tf.errors.OpError) as e:
        if interrupted(e):
            raise
        if isinstance(e, Error):
            return _fail(first_line(e), args.debug)
        return _fail('%s (%s)' % (first_line(e), type(e).__name__), args.debug)
    return 0


def setup_logging(debug=False):
    """Our log lines, plain, on standard output; rank 0's only under Horovod (warnings from
    every rank)."""
    from utils import distribution
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter('%(message)s'))
    handler.addFilter(lambda record: record.levelno >= logging.WARNING or
                      distribution.is_chief())
    LOG.handlers = [handler]
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)
    LOG.propagate = False


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time (a test's capture may have replaced it),
    flushing each line. A write that fails is not logging's traceback but `_STDOUT`: a closed
    pipe (`| head -1`) makes the command end quietly, other failures (`> /dev/full`) make it
    exit non-zero (`run_main`); nothing is written after."""

    def emit(self, record):
        if _STDOUT.lost:
            return
        try:
            sys.stdout.write(self.format(record) + self.terminator)
            sys.stdout.flush()
        except BrokenPipeError:
            _lose(None)
        except (OSError, ValueError) as e:  # ENOSPC, EIO; ValueError: a closed file object
            _lose(getattr(e, 'strerror', None) or str(e) or type(e).__name__)

    def __init__(self):
        super(_StdoutHandler, self).__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _lose(reason):
    """Standard output failed: remember why, and point its descriptor at /dev/null so that
    the interpreter's own flush at exit does not fail again."""
    _STDOUT.lost, _STDOUT.reason = True, reason
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass  # not a real file (a test's capture)


@contextlib.contextmanager
def _stderr_held():
    """File descriptor 2 held back while TensorFlow loads: its C++ libraries log there as they
    load, before any log level is read (TF 2.21 prints "oneDNN custom operations are on",
    twice, on CPUs where oneDNN is on), which would break the one-line errors. What they
    printed is shown if the import fails otherwise than with our one-line ImportError."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            except ImportError:
                raise
            except BaseException:
                os.dup2(saved, 2)
                held.seek(0)
                os.write(2, held.read())
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_tensorflow():
    import warnings
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', category=DeprecationWarning)
    from models.compat import tf
    tf.logging.set_verbosity(tf.logging.ERROR)


def _fail(message, debug):
    if debug:
        traceback.print_exc()
    print('error: %s' % message, file=sys.stderr)
    return 1
