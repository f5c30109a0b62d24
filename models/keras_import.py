"""Load tf.keras.applications DenseNet-121/169/201 weight files (.h5) into our graph.

Keras names layers conv{b+1}_block{l}_{0,1,2}_{bn,conv}, pool{b+1}_{bn,conv}, conv1/{conv,bn},
bn and the classifier fc1000 (keras-applications 1.0.8, TF 1.15) or predictions (Keras 2.x, TF 2);
they map one-to-one, by structure, onto ours. Keras' input preprocessing for
DenseNet is its "torch" mode: pixels / 255, minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225)
per channel — `preprocess_input`, with `models.presets`' IMAGENET_MEAN/STD, which utils.data's
ImageNet pipeline normalises with too.
"""
import contextlib
import functools
import operator
import os
import re

import numpy as np

from models.densenet import SCOPE
from models.presets import IMAGENET_MEAN, IMAGENET_STD
CLASSIFIER = 'classifier'
KERAS_MODELS = ('densenet121', 'densenet169', 'densenet201')  # what tf.keras.applications has

# Our layer scope -> Keras layer, per dense layer and transition; {b} is the Keras stage.
_DENSE_LAYER = {'norm1': 'conv{b}_block{l}_0_bn', 'conv1': 'conv{b}_block{l}_1_conv',
                'norm2': 'conv{b}_block{l}_1_bn', 'conv2': 'conv{b}_block{l}_2_conv'}
_TRANSITION = {'norm': 'pool{b}_bn', 'conv': 'pool{b}_conv'}
_KERAS_CLASSIFIERS = ('fc1000', 'predictions')  # the old and the new Keras name
_FIXED = {'stem/conv0': 'conv1/conv', 'stem/norm0': 'conv1/bn', 'final/final_norm': 'bn',
          CLASSIFIER: _KERAS_CLASSIFIERS[0]}
_DENSE_RE = re.compile(r'denseblock(\d+)/denselayer(\d+)/(\w+)')
_TRANSITION_RE = re.compile(r'transition(\d+)/(\w+)')
_KERAS_LAYER_RE = re.compile(r'conv\d+_block\d+_\d_(bn|conv)$|pool\d+_(bn|conv)$')


def _keras_name(ours):
    """Our variable name -> (Keras layer name, weight name), or None if it has no Keras twin."""
    name = ours[len(SCOPE) + 1:] if ours.startswith(SCOPE + '/') else ours
    scope, _, weight = name.rpartition('/')
    if scope in _FIXED:
        return _FIXED[scope], weight
    match = _DENSE_RE.fullmatch(scope)
    if match and match.group(3) in _DENSE_LAYER:
        block, layer, part = match.groups()
        return _DENSE_LAYER[part].format(b=int(block) + 1, l=layer), weight
    match = _TRANSITION_RE.fullmatch(scope)
    if match and match.group(2) in _TRANSITION:
        return _TRANSITION[match.group(2)].format(b=int(match.group(1)) + 1), weight
    return None


# The most bytes one weight may declare: DenseNet-201's largest (its classifier's kernel,
# 1920 x 1000 float32) is 7.7 MB. A file's weights are checked against this and the file's own
# size before any is read: a crafted 5 KB file may declare petabytes.
MAX_WEIGHT_BYTES = 1 << 30


@contextlib.contextmanager
def _weights_group(path):
    """The HDF5 group of a Keras weights (or whole-model) file's layers; ValueError naming
    `path` if it is not a readable HDF5 file or holds no Keras layers."""
    import h5py
    try:
        f = h5py.File(path, 'r')
    except OSError as e:
        raise ValueError('%s: not a readable .h5 file (%s)' % (path, str(e).splitlines()[0]))
    with f:
        group = f['model_weights'] if 'model_weights' in f else f
        if 'layer_names' not in group.attrs:
            raise ValueError('%s: not a Keras weights file (no layer_names)' % path)
        yield group


def _names(attrs, key, where):
    """The list of names in HDF5 attribute `key`; ValueError naming `where` if it is not one."""
    if key not in attrs:
        raise ValueError('%s has no %s: not a Keras weights file' % (where, key))
    names = attrs[key]
    if not isinstance(names, np.ndarray) or names.ndim != 1 or not all(
            isinstance(n, (bytes, str)) for n in names):
        raise ValueError('%s: %s is not a list of names' % (where, key))
    return [n.decode('utf-8', 'replace') if isinstance(n, bytes) else n for n in names]


def _datasets(path, group):
    """{layer: {weight: h5py.Dataset}} of a Keras weights group, its structure and declared
    sizes checked (ValueError naming the first thing wrong); no weight is read here."""
    import h5py
    limit = min(MAX_WEIGHT_BYTES, os.path.getsize(path))
    weights = {}
    for layer in _names(group.attrs, 'layer_names', path):
        if not isinstance(group.get(layer), h5py.Group):
            raise ValueError('%s: layer %s is listed but missing' % (path, layer))
        entry = {}
        for weight in _names(group[layer].attrs, 'weight_names', '%s: layer %s' % (path, layer)):
            found = group[layer].get(weight)
            if not isinstance(found, h5py.Dataset) or found.dtype.kind != 'f':
                raise ValueError('%s: weight %s/%s is listed but %s' % (
                    path, layer, weight, 'missing' if found is None else 'not an array of floats'))
            size = functools.reduce(operator.mul, found.shape, found.dtype.itemsize)
            if size > limit:
                raise ValueError('%s: weight %s/%s declares %s values (%d bytes), more than the '
                                 'file (%d bytes) or any DenseNet holds' % (
                                     path, layer, weight, list(found.shape), size,
                                     os.path.getsize(path)))
            entry[weight.split('/')[-1].split(':')[0]] = found
        if entry:
            weights[layer] = entry
    for name in _KERAS_CLASSIFIERS[1:]:  # one name for the classifier, whichever Keras wrote it
        if name in weights and _KERAS_CLASSIFIERS[0] not in weights:
            weights[_KERAS_CLASSIFIERS[0]] = weights.pop(name)
    return weights


def read_keras_h5(path):
    """{layer name: {weight name: array}} from a Keras weights (or whole-model) .h5 file."""
    with _weights_group(path) as group:
        return dict((layer, dict((w, np.asarray(d)) for w, d in entry.items()))
                    for layer, entry in _datasets(path, group).items())


def check_source(path, model):
    """ValueError, before any graph is built, if `path` cannot initialise `model`: a model
    without Keras weights, no such file, or a file that is no Keras weights file (its layers
    are matched against the graph later, when it exists)."""
    if model not in KERAS_MODELS:
        raise ValueError('Keras weights exist for %s, not %s (choose one with --model)' % (
            '/'.join(KERAS_MODELS), model))
    if not os.path.isfile(path):
        raise ValueError('%s: no such Keras weights file' % path)
    with _weights_group(path) as group:
        _datasets(path, group)


def preprocess_input(images):
    """RGB pixels in [0, 255] (NHWC numpy array or tensor) -> what Keras' DenseNets expect;
    equals tf.keras.applications.densenet.preprocess_input."""
    return ((images - np.asarray(IMAGENET_MEAN, np.float32)) /
            np.asarray(IMAGENET_STD, np.float32))


def _is_classifier(var):
    return var.op.name.startswith('%s/%s/' % (SCOPE, CLASSIFIER))


def keras_values(path, variables, new_classifier=False):
    """([(variable, value)], [skipped variable]) for a Keras DenseNet .h5.

    ValueError names the first variable the file lacks or holds in another shape, or a DenseNet
    layer of the file nothing here takes (a file of another architecture). With
    `new_classifier`, a classifier of another class count is skipped (fine-tuning) instead.
    """
    if not os.path.isfile(path):
        raise ValueError('%s: no such Keras weights file' % path)
    with _weights_group(path) as group:
        return _match(path, _datasets(path, group), variables, new_classifier)


def _match(path, keras, variables, new_classifier):
    """`keras_values` of the file's {layer: {weight: h5py.Dataset}}: each weight's shape is
    compared with its variable's before it is read."""
    pairs, skipped, used = [], [], set()
    for var in variables:
        target = _keras_name(var.op.name)
        if target is None:
            continue
        layer, weight = target
        used.add(layer)
        if layer not in keras or weight not in keras[layer]:
            raise ValueError('%s has no %s/%s for %s: not a Keras DenseNet of this depth' % (
                path, layer, weight, var.op.name))
        value = keras[layer][weight]
        if list(value.shape) != var.shape.as_list():  # h5py's shape: nothing read yet
            if new_classifier and _is_classifier(var):
                skipped.append(var)
                continue
            raise ValueError('%s: %s/%s is %s, %s needs %s (another architecture or class count)'
                             % (path, layer, weight, list(value.shape), var.op.name,
                                var.shape.as_list()))
        pairs.append((var, np.asarray(value)))
    if not pairs:
        raise ValueError('no DenseNet variables to load %s into' % path)
    unused = sorted(l for l in keras if _KERAS_LAYER_RE.match(l) and l not in used)
    if unused:
        raise ValueError('%s holds %s, which this model lacks: a deeper Keras DenseNet' % (
            path, unused[0]))
    return pairs, skipped


def load_keras_weights(sess, path, variables, new_classifier=False):
    """Loads a Keras DenseNet .h5 into `variables` (our densenet121/169/201 graph); returns the
    variables left as they were (a classifier of another class count, with `new_classifier`)."""
    pairs, skipped = keras_values(path, variables, new_classifier)
    assign(sess, pairs)
    return skipped


def assign(sess, pairs):
    """Gives each variable of [(variable, value)] its value, in one run (Variable.load runs once
    per variable: slow in a large, finalized graph)."""
    sess.run([var.initializer for var, _ in pairs],
             {var.initializer.inputs[1]: value for var, value in pairs})
