"""The older TF port's entry point, kept so that code written for it keeps working."""
from models.presets import densenet121


def get_model(img_input, classes, data_format=None, efficient=False, training=True):
    """Logits of DenseNet-121 on `img_input` (laid out as `data_format`)."""
    return densenet121(img_input, classes, data_format=data_format, efficient=efficient,
                       training=training)()
