import collections
import importlib
import os
import subprocess
import sys

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
    """This process's environment without what importing TF 2 put there: TF2_BEHAVIOR=1 would
    switch a TF 1.15 child to TF 2 behaviour."""
    env = dict(os.environ)
    env.pop('TF2_BEHAVIOR', None)
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
