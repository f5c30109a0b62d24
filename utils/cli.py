"""What the entry scripts share: one-line errors instead of tracebacks, and dataset set-up."""
import os
import sys
import traceback

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def quiet_tensorflow():
    import tensorflow as tf
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    import warnings
    warnings.filterwarnings('ignore', category=FutureWarning)
    warnings.filterwarnings('ignore', category=DeprecationWarning)


def run_main(main, argv=None, debug_flag='--debug'):
    """Runs `main(argv)`; expected failures print `error: ...` on one line and exit 1."""
    quiet_tensorflow()
    from utils.checkpoints import CheckpointError
    from utils.data import DataError
    from utils.run_loop import TrainingError
    import tensorflow as tf
    argv = sys.argv[1:] if argv is None else argv
    debug = _flag_set(argv, debug_flag)
    try:
        sys.exit(main(argv) or 0)
    except (DataError, CheckpointError, TrainingError, ValueError, OSError) as e:
        _fail(e, str(e), debug)
    except tf.errors.OpError as e:  # e.g. a corrupt record met in training: TF's own words
        _fail(e, '%s (%s)' % (e.message.split('\n')[0].split('\t')[0].strip(),
                              type(e).__name__), debug)


def _fail(error, message, debug):
    if debug:
        traceback.print_exc()
    message = message.splitlines()[0] if message.strip() else type(error).__name__
    print('error: %s' % message, file=sys.stderr)
    sys.exit(1)


def _flag_set(argv, flag):
    """Whether a boolean flag is on in `argv` (`--debug`, `--debug True`, `--debug=1`, ...)."""
    from utils.flags import str2bool
    for i, arg in enumerate(argv):
        if arg == flag:
            value = argv[i + 1] if i + 1 < len(argv) else 'true'
        elif arg.startswith(flag + '='):
            value = arg.split('=', 1)[1]
        else:
            continue
        try:
            return str2bool(value)
        except Exception:
            return True
    return False
