"""The one graph builder that training, evaluation, export and the Estimator share: raw pixels
in, logits out. Normalisation, layout and precision live here so that every graph is the same."""
import models
from models.compat import tf
from models.layers import CHANNELS_FIRST


def inference(images, dataset, model, training, data_format, fp16=False, efficient=False,
              dropout_rate=0.0):
    """Raw NHWC float32 pixels -> (float32 logits, DenseNetCreator).

    `dataset` normalises the pixels (its `normalize`), `model` is a `utils.config.ModelConfig`,
    `data_format` the layout the network computes in. `efficient` and `dropout_rate` only act
    when `training`: an inference graph never recomputes and never drops.
    """
    x = dataset.normalize(images)
    if data_format == CHANNELS_FIRST:
        x = tf.transpose(x, [0, 3, 1, 2])
    if fp16:
        x = tf.cast(x, tf.float16)
    network = creator(model, x, data_format, efficient=efficient, dropout_rate=dropout_rate,
                      training=training)
    return network(), network


def creator(model, images, data_format, **kwargs):
    """The `models.DenseNetCreator` of `model` (a ModelConfig) on `images`, laid out as
    `data_format`; `kwargs` as the creator takes them (efficient, dropout_rate, training)."""
    return models.create(model.model, images, model.num_classes, depth=model.depth,
                         growth_rate=model.growth_rate, data_format=data_format,
                         mfm_transitions=model.mfm_transitions, mfm_layers=model.mfm_layers,
                         **kwargs)
