"""The general DenseNet builder (Huang et al. 2017) with memory-efficient training (Pleiss et al. 2017).

Only layers are built here: data, optimizer and hooks belong to `utils`.
"""
import dataclasses
import itertools
import numbers
from typing import Tuple

from models import layers as L
from models import shared
from models.compat import tf
from models import recompute as R

SCOPE = 'densenet'


class DenseNetCreator(object):
    """Builds a DenseNet graph; calling the instance returns logits (or pooled features).

    Variable names read like the paper and are the same whatever `efficient` is:
    `densenet/conv0`, `densenet/denseblock2/denselayer5/conv1`, `densenet/transition1/conv`,
    `densenet/final_norm`, `densenet/classifier`. Calling a second instance in the same graph reuses
    the variables (e.g. a training and an evaluation tower).

    Args:
      img_input: 4-D float tensor laid out as `data_format` says; float16 runs the model in float16
        with float32 master weights and float32 batch-norm statistics.
      nb_classes: number of logits (ignored without the top).
      bottleneck: 1x1 convolution with 4k filters before each 3x3 convolution (DenseNet-B).
      data_format: 'channels_first' or 'channels_last'; None picks channels_first only on a GPU.
      depth: number of convolutional and fully connected layers; sets the layers per block when
        `nb_layers_per_block` is -1: (depth - B - 1) / B per block, halved with bottleneck.
      dropout_rate: dropout after each dense layer's 3x3 convolution (training only).
      efficient: True recomputes each dense layer, transition, the stem and the final norm during
        back-propagation instead of storing their intermediate feature maps, so that training
        memory grows linearly with depth; numerically the same model. Between True and False:
        'every=N' recomputes every N-th dense layer of each block (N=1 is True), 'blocks=2,3'
        only the listed (1-based) blocks with their transitions. 'shared': no concatenation at
        all and batch statistics computed once per feature map, recomputed chunk by chunk in
        custom gradients (`models.shared`): the least memory, at about naive speed; not with
        `mfm_transitions`. See `Recomputation`.
      growth_rate: k, the channels each dense layer adds.
      include_top: end with the classifier; otherwise return the globally pooled features.
      nb_dense_block: number of dense blocks B.
      nb_filter: channels of the initial convolution; -1 means 2k.
      nb_layers_per_block: -1 (from depth), an int for every block, or a list with one per block.
      training: batch norm uses batch statistics and updates its moving averages; dropout is on.
      trainable: whether the variables are trainable.
      reduction: transitions keep (1 - reduction) of the channels (DenseNet-C uses 0.5).
      mfm_transitions: 1-based blocks whose transition applies Max-Feature-Map instead of ReLU
        after its batch norm, halving the block output before the 1x1 compression (so the next
        block starts from half the channels). On the main path only, as in the practitioner's
        note this comes from; e.g. (2,) for the middle of a three-block DenseNet-BC.
      mfm_layers: 1-based blocks whose dense layers apply MFM instead of ReLU before the 3x3
        convolution, halving the 4k bottleneck to 2k (needs `bottleneck`).
      subsample_initial_block: ImageNet stem (7x7/2 conv, batch norm, ReLU, 3x3/2 max pool)
        instead of the CIFAR stem (one 3x3 conv).
    """

    def __init__(self, img_input, nb_classes, bottleneck=False, data_format=None, depth=40,
                 dropout_rate=0., efficient=False, growth_rate=12, include_top=True,
                 nb_dense_block=3, nb_filter=-1, nb_layers_per_block=-1, training=True,
                 trainable=True, reduction=0.0, subsample_initial_block=False,
                 mfm_transitions=(), mfm_layers=()):
        if data_format is None:
            data_format = L.default_data_format()
        if data_format not in L.DATA_FORMATS:
            raise ValueError('data_format must be one of %s, got %r' % (L.DATA_FORMATS, data_format))
        img_input = tf.convert_to_tensor(img_input)
        if img_input.shape.ndims != 4 or img_input.shape[L.channel_axis(data_format)].value is None:
            raise ValueError('img_input must be a 4-D %s tensor with a known channel count, got '
                             'shape %s' % (data_format, img_input.shape))
        if not img_input.dtype.is_floating:
            raise ValueError('img_input must be floating point, got %s' % img_input.dtype.name)
        _check_int('growth_rate', growth_rate, minimum=1)
        _check_int('nb_dense_block', nb_dense_block, minimum=1)
        _check_int('depth', depth, minimum=1)
        if include_top:
            _check_int('nb_classes', nb_classes, minimum=1)
        if nb_filter != -1:
            _check_int('nb_filter', nb_filter, minimum=1)
        if not 0.0 <= reduction < 1.0:
            raise ValueError('reduction must be in [0, 1), got %r' % (reduction,))
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError('dropout_rate must be in [0, 1), got %r' % (dropout_rate,))
        plan = Recomputation.parse(efficient)
        plan.check(nb_dense_block)
        self.mfm_transitions = _block_set('mfm_transitions', mfm_transitions, nb_dense_block - 1)
        self.mfm_layers = _block_set('mfm_layers', mfm_layers, nb_dense_block)
        if self.mfm_layers and not bottleneck:
            raise ValueError('mfm_layers halves the bottleneck: it needs bottleneck=True')
        if plan.shared and self.mfm_transitions:
            raise ValueError("efficient='shared' normalises each earlier feature map on its own, "
                             "and a Max-Feature-Map transition pairs channels across them: use "
                             "efficient=True with mfm_transitions")

        _check_image_size(img_input.shape, data_format, nb_dense_block, subsample_initial_block)
        self.img_input = img_input
        self.nb_classes = nb_classes
        self.bottleneck = bool(bottleneck)
        self.data_format = data_format
        self.dropout_rate = float(dropout_rate)
        self.growth_rate = growth_rate
        self.include_top = include_top
        self.nb_dense_block = nb_dense_block
        self.nb_filter = 2 * growth_rate if nb_filter == -1 else nb_filter
        self.nb_layers = _layers_per_block(depth, nb_dense_block, nb_layers_per_block,
                                           self.bottleneck)
        self.training = bool(training)
        self.trainable = bool(trainable)
        self.compression = 1.0 - reduction
        self.subsample_initial_block = bool(subsample_initial_block)
        self._check_mfm_channels()
        # Recomputation only pays off when gradients are taken: inference never recomputes.
        self.plan = plan if self.training else Recomputation()
        self.recomputed = []  # scopes recomputed in back-propagation, filled by __call__
        self.dropout_seed = None
        self.update_ops = []

    def _check_mfm_channels(self):
        """ValueError now, not halfway through building, if MFM meets an odd channel count."""
        channels = self.nb_filter
        for block in range(self.nb_dense_block - 1):
            channels += self.nb_layers[block] * self.growth_rate
            if block in self.mfm_transitions:
                if channels % 2:
                    raise ValueError('MFM needs an even channel count, got %d channels at '
                                     '%s/transition%d' % (channels, SCOPE, block + 1))
                channels //= 2
            channels = int(channels * self.compression)

    # -- graph ---------------------------------------------------------------------------------

    def __call__(self):
        with tf.variable_scope(SCOPE, reuse=tf.AUTO_REUSE, use_resource=True,
                               custom_getter=L.fp32_master_weights):
            updates_before = len(tf.get_collection(tf.GraphKeys.UPDATE_OPS))
            if self.training and self.dropout_rate > 0:
                # One seed per step; each layer offsets it. Feed it to replay a step's dropout.
                self.dropout_seed = L.new_dropout_seed()
            x = self._apply('stem', self._stem, [self.img_input], self.plan.stem)
            if self.plan.shared:
                x = shared.blocks(self, x)
            else:
                x = self._blocks(x)
            self.update_ops = tf.get_collection(tf.GraphKeys.UPDATE_OPS)[updates_before:]
            if not self.include_top:
                return tf.cast(x, L.stats_dtype(x.dtype))
            logits = tf.layers.dense(x, self.nb_classes, name='classifier', reuse=tf.AUTO_REUSE,
                                     trainable=self.trainable)
            return tf.cast(logits, L.stats_dtype(logits.dtype), name='logits')

    def _blocks(self, x):
        """Dense blocks, transitions and the final norm, each one function of the concatenated
        earlier features (recomputed as the plan says); returns the pooled features."""
        layer_index = 0
        for block in range(self.nb_dense_block):
            features = [x]
            with tf.variable_scope('denseblock%d' % (block + 1)):
                for layer in range(self.nb_layers[block]):
                    layer_index += 1
                    inputs = list(features)
                    if self.dropout_seed is not None:
                        inputs.append(self.layer_seed(layer_index))
                    recompute = self.plan.layer(block, layer)
                    outputs = self._apply('denselayer%d' % (layer + 1),
                                          self._dense_layer_body(block, recompute), inputs,
                                          recompute)
                    if recompute:  # the features passed through: see _dense_layer_body
                        features = list(outputs[1:])
                        outputs = outputs[0]
                    features.append(outputs)
            if block < self.nb_dense_block - 1:
                x = self._apply('transition%d' % (block + 1), self._transition_body(block),
                                features, self.plan.transition(block))
        return self._apply('final', self._head, features,
                           self.plan.final(self.nb_dense_block))

    def layer_seed(self, layer_index):
        """The dropout seed of dense layer `layer_index` (1-based, counted over all blocks)."""
        return self.dropout_seed + tf.constant([0, layer_index], tf.int64)

    def _apply(self, scope, body, inputs, recompute):
        """Runs `body(inputs, is_recomputing)` in `scope`, recomputed in back-prop if asked."""
        with tf.variable_scope(scope):
            if recompute:
                self.recomputed.append(tf.get_variable_scope().name)
                return R.recompute(R.filter_gradient_first(body), len(inputs))(*inputs)
            return body(inputs, False)

    def _bn_relu(self, x, name, is_recomputing, mfm=False):
        """Batch norm, then ReLU (or Max-Feature-Map, which halves the channels)."""
        x = L.batch_norm(x, self.training, self.data_format, name,
                         update_statistics=not is_recomputing, trainable=self.trainable)
        return L.max_feature_map(x, self.data_format) if mfm else tf.nn.relu(x)

    def _conv(self, x, filters, kernel_size, name, **kwargs):
        return L.conv2d(x, filters, kernel_size, self.data_format, name,
                        trainable=self.trainable, **kwargs)

    def _concat(self, features):
        return features[0] if len(features) == 1 else tf.concat(
            features, L.channel_axis(self.data_format))

    def _pad(self, x, amount):
        pads = [[0, 0]] * 4
        for axis in L.spatial_axes(self.data_format):
            pads[axis] = [amount, amount]
        return tf.pad(x, pads)

    def _stem(self, inputs, is_recomputing):
        x = inputs[0]
        if not self.subsample_initial_block:
            return self._conv(x, self.nb_filter, 3, 'conv0')
        # Explicit padding then 'valid', as tf.keras.applications does, so imported weights agree.
        x = self._conv(self._pad(x, 3), self.nb_filter, 7, 'conv0', strides=2, padding='valid')
        x = self._bn_relu(x, 'norm0', is_recomputing)
        return tf.layers.max_pooling2d(self._pad(x, 1), 3, 2, padding='valid',
                                       data_format=self.data_format, name='pool0')

    def _dense_layer_body(self, block, passthrough=False):
        """The dense layer as a function of the earlier features (and the dropout seed).

        With `passthrough` it also returns the earlier features (identities, no copies), which
        the next layer takes instead. Each feature map's gradient then flows back through every
        later layer, which adds its own contribution to it as it goes: one running sum per
        feature map, instead of every later layer's piece waiting for one sum at the end
        (quadratic: the paper's "shared gradient storage" problem, in TensorFlow's terms).
        """
        def dense_layer(inputs, is_recomputing):
            new = self._dense_layer(list(inputs), is_recomputing, mfm=block in self.mfm_layers)
            if not passthrough:
                return new
            features = inputs[:-1] if self.dropout_seed is not None else inputs
            return [new] + [tf.identity(f) for f in features]
        return dense_layer

    def _transition_body(self, block):
        def transition(inputs, is_recomputing):
            return self._transition(inputs, is_recomputing, mfm=block in self.mfm_transitions)
        return transition

    def _dense_layer(self, inputs, is_recomputing, mfm=False):
        """BN-ReLU-(1x1 conv-BN-ReLU)-3x3 conv-dropout on the concatenation of earlier features.

        The concatenation happens here, inside the recomputed function: were it outside, every
        layer would store its own copy of all earlier features and memory would stay quadratic.
        """
        seed = inputs.pop() if self.dropout_seed is not None else None
        x = self._bn_relu(self._concat(inputs), 'norm1', is_recomputing)
        if self.bottleneck:
            x = self._conv(x, 4 * self.growth_rate, 1, 'conv1')
            x = self._bn_relu(x, 'norm2', is_recomputing, mfm)
            x = self._conv(x, self.growth_rate, 3, 'conv2')
        else:
            x = self._conv(x, self.growth_rate, 3, 'conv1')
        if seed is not None:
            x = L.dropout(x, self.dropout_rate, seed)
        return x

    def _transition(self, inputs, is_recomputing, mfm=False):
        x = self._concat(inputs)
        channels = int(x.shape[L.channel_axis(self.data_format)])
        filters = int((channels // 2 if mfm else channels) * self.compression)  # as checked
        x = self._bn_relu(x, 'norm', is_recomputing, mfm)
        x = self._conv(x, filters, 1, 'conv')
        return tf.layers.average_pooling2d(x, 2, 2, data_format=self.data_format, name='pool')

    def _head(self, inputs, is_recomputing):
        x = self._bn_relu(self._concat(inputs), 'final_norm', is_recomputing)
        return tf.reduce_mean(x, L.spatial_axes(self.data_format))


@dataclasses.dataclass(frozen=True)
class Recomputation(object):
    """Which parts of the network `efficient` recomputes in back-propagation.

    `every=N`: every N-th dense layer of each block (layers N, 2N, ...; N=1 is everything),
    plus the stem, transitions and final norm. `blocks=(1, 3)`: the dense layers and the
    transition of those (1-based) blocks, the stem with block 1, the final norm with the last.
    `shared`: the stem as with every=1, everything after it in `models.shared`'s custom
    gradients. None of them: nothing (naive).
    """
    every: int = 0
    blocks: Tuple[int, ...] = ()
    shared: bool = False

    @classmethod
    def parse(cls, value):
        """From True, False, 'true'/'false', 'shared', 'every=N', 'blocks=i,j' or a
        Recomputation; ValueError otherwise."""
        if isinstance(value, cls):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if value is True or text == 'true':
            return cls(every=1)
        if value is False or text == 'false':
            return cls()
        if text == 'shared':
            return cls(shared=True)
        key, _, numbers = (text or '').partition('=')
        try:
            values = [int(n) for n in numbers.split(',')] if numbers else []
        except ValueError:
            values = []
        if key == 'every' and len(values) == 1 and values[0] >= 1:
            return cls(every=values[0])
        if key == 'blocks' and values and min(values) >= 1:
            return cls(blocks=tuple(sorted(set(values))))
        raise ValueError("efficient must be True, False, 'shared', 'every=N' (N >= 1) or "
                         "'blocks=i,j,...', got %r" % (value,))

    def check(self, nb_dense_block):
        """ValueError if a listed block is not one of `nb_dense_block`."""
        bad = [b for b in self.blocks if b > nb_dense_block]
        if bad:
            raise ValueError('efficient=%r: block %d is out of range (1..%d)' % (
                str(self), bad[0], nb_dense_block))

    @property
    def stem(self):
        return self.every > 0 or 1 in self.blocks or self.shared

    def final(self, nb_dense_block):
        return self.every > 0 or nb_dense_block in self.blocks

    def layer(self, block, layer):
        """Whether dense layer `layer` (0-based) of block `block` (0-based) is recomputed."""
        return (self.every > 0 and (layer + 1) % self.every == 0) or block + 1 in self.blocks

    def transition(self, block):
        return self.every > 0 or block + 1 in self.blocks

    def __str__(self):
        if self.shared:
            return 'shared'
        if self.every == 1:
            return 'efficient'
        if self.every:
            return 'every=%d' % self.every
        if self.blocks:
            return 'blocks=' + ','.join(map(str, self.blocks))
        return 'naive'


def _side_at_last_block(side, nb_dense_block, subsample_initial_block):
    """The feature maps' side length in the last dense block for `side`-pixel images (0: they
    vanish before it): the stem's 7x7/2 conv and 3x3/2 pool (padded), then one 2x2/2 average
    pool per transition."""
    if subsample_initial_block:
        side = (side - 1) // 2 + 1  # conv0, padded by 3
        side = (side - 1) // 2 + 1  # pool0, padded by 1
    for _ in range(nb_dense_block - 1):
        side //= 2
    return side


def _check_image_size(shape, data_format, nb_dense_block, subsample_initial_block):
    """ValueError if images of `shape` shrink to nothing before the last dense block (e.g.
    DenseNet-121 on 8x8 digits), naming the smallest side that works."""
    axes = (2, 3) if data_format == L.CHANNELS_FIRST else (1, 2)
    sides = [shape[a].value for a in axes if shape[a].value is not None]
    if not sides or _side_at_last_block(min(sides), nb_dense_block, subsample_initial_block):
        return
    smallest = next(n for n in itertools.count(1)
                    if _side_at_last_block(n, nb_dense_block, subsample_initial_block))
    raise ValueError('%dx%d images are too small for %d dense blocks%s: they shrink to nothing '
                     'before the last block; this model needs at least %dx%d' % (
                         shape[axes[0]].value or 0, shape[axes[1]].value or 0, nb_dense_block,
                         ' after the ImageNet stem' if subsample_initial_block else '',
                         smallest, smallest))


def _block_set(name, blocks, last):
    """0-based block indices from 1-based `blocks` in 1..last; ValueError if out of range."""
    blocks = [blocks] if isinstance(blocks, numbers.Integral) else list(blocks or ())
    for b in blocks:
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 1 <= b <= last:
            raise ValueError('%s: block %r is out of range (1..%d)' % (name, b, last))
    return frozenset(b - 1 for b in blocks)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError('%s must be an integer >= %d, got %r' % (name, minimum, value))


def _layers_per_block(depth, nb_dense_block, nb_layers_per_block, bottleneck):
    """Layers in each dense block, from an explicit setting or from the paper's depth rule."""
    if isinstance(nb_layers_per_block, (list, tuple)):
        if len(nb_layers_per_block) != nb_dense_block:
            raise ValueError('nb_layers_per_block lists %d blocks but nb_dense_block is %d' % (
                len(nb_layers_per_block), nb_dense_block))
        for n in nb_layers_per_block:
            _check_int('each entry of nb_layers_per_block', n, minimum=1)
        return list(nb_layers_per_block)
    if nb_layers_per_block != -1:
        _check_int('nb_layers_per_block', nb_layers_per_block, minimum=1)
        return [nb_layers_per_block] * nb_dense_block
    # Besides the dense layers: the initial conv, B - 1 transitions and the classifier.
    other = nb_dense_block + 1
    per_layer = 2 if bottleneck else 1
    step = nb_dense_block * per_layer
    if depth <= other or (depth - other) % step:
        fits = [d for d in (40, 100, 190, 250) if (d - other) % step == 0]
        examples = ', '.join(str(d) for d in fits or [other + step * n for n in (1, 2, 3)])
        raise ValueError(
            'depth=%d does not fit a DenseNet%s with %d blocks: (depth - %d) must be a positive '
            'multiple of %d (e.g. %s), or pass nb_layers_per_block' % (
                depth, '-B' if bottleneck else '', nb_dense_block, other, step, examples))
    return [(depth - other) // step] * nb_dense_block
