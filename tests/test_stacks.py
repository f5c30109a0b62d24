"""The stacks side by side (TF 1.15, 2.15, 2.21): a model dir trained on this stack resumes,
evaluates and exports on another, and frozen graphs and SavedModels of either serve on the other.

The other stacks' Pythons come from OTHER_STACKS, colon-separated. One test moves a model dir
there and back and serves each side's exports on the other, so `make test` gives each stack's
suite the next stack round a ring (1.15 -> 2.15 -> 2.21 -> 1.15): every pair, both directions.
"""
import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import ROOT, SMALL, child_environment, run
from models import compat
from models.compat import tf
from utils import data
from utils.config import ModelConfig
from utils.inference import inference
from utils.predict import Predictor

OTHERS = [p for p in os.environ.get('OTHER_STACKS', '').split(os.pathsep) if p]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not OTHERS, reason='OTHER_STACKS is not set (make test sets it)')]

# Prints the TF version, then the logits of a frozen graph and of a SavedModel as JSON.
SERVE = '''
import json, sys
sys.path.insert(0, %r)
import numpy as np
from models import compat
from models.compat import tf
from utils.predict import Predictor
images = np.load(sys.argv[3])
with tf.Graph().as_default(), tf.Session() as sess:
    meta = tf.saved_model.loader.load(sess, [tf.saved_model.SERVING], sys.argv[2])
    signature = meta.signature_def['serving_default']
    saved = sess.run(signature.outputs['logits'].name, {signature.inputs['images'].name: images})
print(json.dumps(dict(version=compat.VERSION, frozen=Predictor(sys.argv[1]).logits_of(
    images).tolist(), saved_model=saved.tolist())))
''' % ROOT


def _version(python):
    out = subprocess.run([python, '-c', 'import sys; sys.path.insert(0, %r); '
                          'from models import compat; print(compat.VERSION)' % ROOT],
                         stdout=subprocess.PIPE, universal_newlines=True, check=True,
                         env=child_environment()).stdout
    return out.strip()


def _logits(model_dir, images):
    """This stack's inference graph on `model_dir`'s latest checkpoint."""
    with tf.Graph().as_default():
        logits, _ = inference(tf.constant(images), data.spec('digits'),
                              ModelConfig.load(model_dir), False, 'channels_last')
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, tf.train.latest_checkpoint(model_dir))
            return sess.run(logits)


def _serve_on(other, pb, saved_model, images, tmp_path):
    path = str(tmp_path / 'images.npy')
    np.save(path, images)
    proc = subprocess.run([other, '-c', SERVE, pb, saved_model, path], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600, env=child_environment())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('other', OTHERS)
def test_a_model_dir_moves_to_the_other_stack_and_back(tmp_path, entry, other):
    assert _version(other) != compat.VERSION, 'the same stack twice'
    model_dir = str(tmp_path / 'run')
    args = ['--model_dir', model_dir, '--epochs_per_eval', '0', '--fp16', 'True'] + SMALL
    entry('train.py', '--max_steps', '3', *args)
    # Resumed on the other stack (global step, loss scale and momentum from this one's
    # checkpoint), then evaluated and exported there.
    resumed = run('train.py', '--max_steps', '6', *args, python=other)
    assert 'resuming from %s at step 3' % os.path.join(model_dir, 'model.ckpt-3') in \
        resumed.stdout, resumed.stdout
    assert tf.train.load_variable(model_dir, 'global_step') == 6
    evaluated = run('eval.py', '--model_dir', model_dir, python=other).stdout
    top1 = re.search(r'model\.ckpt-6 \(step 6\): loss [\d.]+, top-1 ([\d.]+)%', evaluated)
    assert top1, evaluated
    pb, saved_model = str(tmp_path / 'other.pb'), str(tmp_path / 'other_saved')
    run('export.py', '--model_dir', model_dir, '--output', pb, '--saved_model', saved_model,
        python=other)

    # Back here: the other stack's checkpoint evaluates the same, and its exports serve here.
    here = entry('eval.py', '--model_dir', model_dir).stdout
    assert 'top-1 %s%%' % top1.group(1) in here, (evaluated, here)
    images = data.spec('digits').test_images[:16]
    expected = _logits(model_dir, images)
    np.testing.assert_allclose(Predictor(pb).logits_of(images), expected, rtol=1e-5, atol=1e-5)
    with tf.Graph().as_default(), tf.Session() as sess:
        meta = tf.saved_model.loader.load(sess, [tf.saved_model.SERVING], saved_model)
        signature = meta.signature_def['serving_default']
        saved = sess.run(signature.outputs['logits'].name,
                         {signature.inputs['images'].name: images})
    np.testing.assert_allclose(saved, expected, rtol=1e-5, atol=1e-5)

    # This stack's exports serve on the other one.
    pb, saved_model = str(tmp_path / 'here.pb'), str(tmp_path / 'here_saved')
    entry('export.py', '--model_dir', model_dir, '--output', pb, '--saved_model', saved_model)
    served = _serve_on(other, pb, saved_model, images, tmp_path)
    assert served['version'] == _version(other)
    np.testing.assert_allclose(served['frozen'], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served['saved_model'], expected, rtol=1e-5, atol=1e-5)
