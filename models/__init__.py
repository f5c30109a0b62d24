"""Memory-efficient DenseNets for TensorFlow 1.15 and TensorFlow 2.x in tf.compat.v1 graph mode."""
from models import densenet_121
from models.densenet import SCOPE, DenseNetCreator, Recomputation
from models.presets import (IMAGENET_BLOCKS, MODEL_NAMES, create, densenet121, densenet169,
                            densenet201, densenet264, densenet_bc, densenet_imagenet)


def count_params(variables):
    """Total number of elements in `variables`."""
    return sum(int(v.shape.num_elements()) for v in variables)
