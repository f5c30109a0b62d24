"""Load tf.keras.applications DenseNet-121/169/201 weight files (.h5) into our graph.

Keras names layers conv{b+1}_block{l}_{0,1,2}_{bn,conv}, pool{b+1}_{bn,conv}, conv1/{conv,bn},
bn and fc1000; they map one-to-one, by structure, onto ours. Keras' input preprocessing for
DenseNet is its "torch" mode: pixels / 255, minus (0.485, 0.456, 0.406), over (0.229, 0.224, 0.225)
per channel, which is what utils.data's ImageNet normalisation does on raw pixels.
"""
import re

import numpy as np

from models.densenet import SCOPE

_BN = ('gamma', 'beta', 'moving_mean', 'moving_variance')


def _keras_name(ours):
    """Our variable name -> (Keras layer name, weight name), or None if it has no Keras twin."""
    name = ours[len(SCOPE) + 1:] if ours.startswith(SCOPE + '/') else ours
    rules = [
        (r'stem/conv0/kernel', lambda m: ('conv1/conv', 'kernel')),
        (r'stem/norm0/(\w+)', lambda m: ('conv1/bn', m.group(1))),
        (r'denseblock(\d+)/denselayer(\d+)/norm1/(\w+)',
         lambda m: ('conv%d_block%s_0_bn' % (int(m.group(1)) + 1, m.group(2)), m.group(3))),
        (r'denseblock(\d+)/denselayer(\d+)/conv1/kernel',
         lambda m: ('conv%d_block%s_1_conv' % (int(m.group(1)) + 1, m.group(2)), 'kernel')),
        (r'denseblock(\d+)/denselayer(\d+)/norm2/(\w+)',
         lambda m: ('conv%d_block%s_1_bn' % (int(m.group(1)) + 1, m.group(2)), m.group(3))),
        (r'denseblock(\d+)/denselayer(\d+)/conv2/kernel',
         lambda m: ('conv%d_block%s_2_conv' % (int(m.group(1)) + 1, m.group(2)), 'kernel')),
        (r'transition(\d+)/norm/(\w+)', lambda m: ('pool%d_bn' % (int(m.group(1)) + 1),
                                                   m.group(2))),
        (r'transition(\d+)/conv/kernel', lambda m: ('pool%d_conv' % (int(m.group(1)) + 1),
                                                    'kernel')),
        (r'final/final_norm/(\w+)', lambda m: ('bn', m.group(1))),
        (r'classifier/(kernel|bias)', lambda m: ('fc1000', m.group(1))),
    ]
    for pattern, target in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return target(match)
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


def assign_ops_from_keras(path, variables):
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
    for var, value in assign_ops_from_keras(path, variables):
        var.load(value, sess)
