"""What the entry scripts share: how TensorFlow starts, logging, and one line for each failure a
user can fix."""
import logging
import os
import sys
import traceback

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
    try:
        return _run_main(parse_args, run, argv)
    except BaseException as e:
        if not interrupted(e):
            raise
    print('error: interrupted (SIGINT)', file=sys.stderr)
    return 128 + 2


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
    """Writes to whatever `sys.stdout` is at the time (a test's capture may have replaced it)."""

    def __init__(self):
        super(_StdoutHandler, self).__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


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
