"""Load tf.keras.applications DenseNet-121/169/201 weight files (.h5) into our graph.

Keras names layers conv{b+1}_block{l}_{0,1,2}_{bn,conv}, pool{b+1}_{bn,conv}, conv1/{conv,bn},
bn and fc1000; they map one-to-one, by structure, onto ours. Keras' input preprocessing for
DenseNet is its "torch" mode: pixels / 255, minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225)
per channel, which is what utils.data's ImageNet normalisation does on raw pixels.
"""
import re

import numpy as np

from models.densenet import SCOPE

# Our layer scope -> Keras layer, per dense layer and transition; {b} is the Keras stage.
_DENSE_LAYER = {'norm1': 'conv{b}_block{l}_0_bn', 'conv1': 'conv{b}_block{l}_1_conv',
                'norm2': 'conv{b}_block{l}_1_bn', 'conv2': 'conv{b}_block{l}_2_conv'}
_TRANSITION = {'norm': 'pool{b}_bn', 'conv': 'pool{b}_conv'}
_FIXED = {'stem/conv0': 'conv1/conv', 'stem/norm0': 'conv1/bn', 'final/final_norm': 'bn',
          'classifier': 'fc1000'}
_DENSE_RE = re.compile(r'denseblock(\d+)/denselayer(\d+)/(\w+)')
_TRANSITION_RE = re.compile(r'transition(\d+)/(\w+)')


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


def read_keras_h5(path):
    """{layer name: {weight name: array}} from a Keras weights (or whole-model) .h5 file."""
    import h5py
    weights = {}
    with h5py.File(path, 'r') as f:
        group = f['model_weights'] if 'model_weights' in f else f
        if 'layer_names' not in group.attrs:
            raise ValueError('%s: not a Keras weights file (no layer_names)' % path)
        for layer in group.attrs['layer_names']:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            entry = {}
            for weight in group[layer].attrs['weight_names']:
                weight = weight.decode() if isinstance(weight, bytes) else weight
                short = weight.split('/')[-1].split(':')[0]
                entry[short] = np.asarray(group[layer][weight])
            if entry:
                weights[layer] = entry
    return weights


def keras_values(path, variables):
    """[(variable, value)] for every variable, from a Keras DenseNet .h5; ValueError naming the
    first variable the file lacks or holds in another shape (a file of another architecture)."""
    keras = read_keras_h5(path)
    pairs = []
    for var in variables:
        target = _keras_name(var.op.name)
        if target is None:
            continue
        layer, weight = target
        if layer not in keras or weight not in keras[layer]:
            raise ValueError('%s has no %s/%s for %s: not a Keras DenseNet of this depth' % (
                path, layer, weight, var.op.name))
        value = keras[layer][weight]
        if list(value.shape) != var.shape.as_list():
            raise ValueError('%s: %s/%s is %s, %s needs %s (another architecture or class count)'
                             % (path, layer, weight, list(value.shape), var.op.name,
                                var.shape.as_list()))
        pairs.append((var, value))
    if not pairs:
        raise ValueError('no DenseNet variables to load %s into' % path)
    return pairs


def load_keras_weights(sess, path, variables):
    """Loads a Keras DenseNet .h5 into `variables` (our densenet121/169/201 graph)."""
    for var, value in keras_values(path, variables):
        var.load(value, sess)
