import collections
import contextlib
import functools
import http.server
import importlib
import io
import os
import subprocess
import sys
import threading

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from models.compat import tf  # noqa: E402
from utils.config import ModelConfig  # noqa: E402

tf.logging.set_verbosity(tf.logging.ERROR)
PYTHON = sys.executable
# Small enough for a test: DenseNet-BC-16 k=4 on the bundled digits.
SMALL = ['--depth', '16', '--growth_rate', '4', '--batch_size', '32', '--log_every_steps', '10']
DIGITS_BC16 = ModelConfig(dataset='digits', synthetic=False, model='densenet_bc', depth=16,
                          growth_rate=4, num_classes=10, image_size=8)

Result = collections.namedtuple('Result', 'returncode stdout stderr')
Run = collections.namedtuple('Run', 'model_dir stdout')
# Checkpoints every 20 steps: a run directory of SMALL's model with steps 0, 20 and 40.
EVERY_20 = SMALL + ['--save_checkpoint_steps', '20', '--epochs_per_eval', '0']


@pytest.fixture
def graph():
    """A fresh default graph for one test."""
    g = tf.Graph()
    with g.as_default():
        yield g


def load_random_weights(sess, variables, seed=0, scale=0.1):
    """Gives every variable the same pseudo-random values whichever graph it lives in."""
    rng = np.random.RandomState(seed)
    for var in sorted(variables, key=lambda v: v.op.name):
        value = rng.randn(*var.shape.as_list()).astype(np.float32) * scale
        if 'moving_variance' in var.op.name or var.op.name.endswith('gamma'):
            value = 1.0 + np.abs(value)
        var.load(value, sess)


def call_main(script, *args):
    """Exit code of `script`'s (train.py, eval.py, export.py) main(argv), run in this process."""
    return importlib.import_module(script[:-len('.py')]).main(list(args))


@pytest.fixture
def entry(capsys):
    """entry(script, *args, check=True) -> Result: an entry point's main(argv) in this process
    (no new interpreter, no second TensorFlow import), with what it printed."""
    def call(script, *args, check=True):
        capsys.readouterr()
        code = call_main(script, *args)
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError('%s %s failed (%d):\n%s\n%s' % (script, ' '.join(args), code,
                                                                 out, err[-3000:]))
        return Result(code, out, err)
    return call


def child_environment():
    """This process's environment without what importing TensorFlow put there, for a child of
    any stack: TF2_BEHAVIOR=1 (TF 2) would switch a TF 1.15 child to TF 2 behaviour, and
    TF_USE_LEGACY_KERAS=1 (where tf-keras is installed) a TF 2.15 child without it to tf-keras."""
    env = dict(os.environ)
    env.pop('TF2_BEHAVIOR', None)
    env.pop('TF_USE_LEGACY_KERAS', None)
    return env


def run(script, *args, check=True, timeout=600, python=PYTHON):
    """The real command, in a new process (for signals, exit codes and what reaches the
    terminal); `python` may be the other stack's."""
    proc = subprocess.run([python, os.path.join(ROOT, script)] + list(args), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout, env=child_environment())
    if check and proc.returncode != 0:
        raise AssertionError('%s failed (%d):\n%s\n%s' % (script, proc.returncode, proc.stdout,
                                                          proc.stderr[-3000:]))
    return proc


def _train_quietly(model_dir, *args):
    """train.py's main in this process, its output captured; the Run."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = call_main('train.py', '--model_dir', model_dir, *args)
    assert code == 0, out.getvalue()[-3000:]
    return Run(model_dir, out.getvalue())


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory):
    """A digits DenseNet-BC-16 k=4 run directory trained to step 40 (checkpoints 0, 20 and 40,
    recomputation on), with what train.py printed. Shared by the tests of export, evaluation,
    run directories and bad inputs: copy it before changing it."""
    return _train_quietly(str(tmp_path_factory.mktemp('trained') / 'run'), '--max_steps', '40',
                          '--efficient', 'True', *EVERY_20)


@pytest.fixture(scope='session')
def fp16_run(tmp_path_factory):
    """The same model trained 20 steps under --fp16 (float32 master weights, loss scale)."""
    return _train_quietly(str(tmp_path_factory.mktemp('trained') / 'fp16'), '--max_steps', '20',
                          '--fp16', 'True', '--efficient', 'True', *EVERY_20)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path on a loopback port for the duration of a test."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d/' % server.server_address[1]
    server.shutdown()
    server.server_close()
