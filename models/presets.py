"""Thin presets over `DenseNetCreator`: the ImageNet DenseNets and CIFAR DenseNet-BC (L, k)."""
from models.densenet import DenseNetCreator

# Layers per dense block of the ImageNet models (Huang et al. 2017, Table 1; 264 from Pleiss et al.).
IMAGENET_BLOCKS = {
    121: (6, 12, 24, 16),
    169: (6, 12, 32, 32),
    201: (6, 12, 48, 32),
    264: (6, 12, 64, 48),
}
# The input normalisation the ImageNet models are trained with: ImageNet's per-channel mean and
# std in raw pixel units, 255 x (0.485, 0.456, 0.406) and 255 x (0.229, 0.224, 0.225), as
# torchvision and tf.keras' DenseNets ("torch" mode) normalise.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
MODEL_NAMES = ('densenet_bc',) + tuple('densenet%d' % n for n in sorted(IMAGENET_BLOCKS))


def densenet_imagenet(img_input, nb_classes=1000, layers=121, growth_rate=32, **kwargs):
    """DenseNet-121/169/201/264: k=32 (the paper's 264 also k=48), 2k initial filters, 7x7/2
    stem, compression 0.5."""
    if layers not in IMAGENET_BLOCKS:
        raise ValueError('ImageNet DenseNets have %s layers, got %r' % (
            '/'.join(map(str, sorted(IMAGENET_BLOCKS))), layers))
    return DenseNetCreator(img_input, nb_classes, bottleneck=True, depth=layers,
                           growth_rate=growth_rate, nb_dense_block=4,
                           nb_layers_per_block=list(IMAGENET_BLOCKS[layers]), reduction=0.5,
                           subsample_initial_block=True, **kwargs)


def densenet_bc(img_input, nb_classes=10, depth=100, growth_rate=12, **kwargs):
    """CIFAR DenseNet-BC (L, k): three blocks of (L - 4) / 6 bottleneck layers, compression 0.5."""
    return DenseNetCreator(img_input, nb_classes, bottleneck=True, depth=depth,
                           growth_rate=growth_rate, nb_dense_block=3, reduction=0.5, **kwargs)


def create(name, img_input, nb_classes, depth=100, growth_rate=12, **kwargs):
    """The creator for a model name of `MODEL_NAMES`; depth and growth rate apply to densenet_bc."""
    if name == 'densenet_bc':
        return densenet_bc(img_input, nb_classes, depth=depth, growth_rate=growth_rate, **kwargs)
    if name.startswith('densenet') and name[len('densenet'):].isdigit():
        layers = int(name[len('densenet'):])
        if layers in IMAGENET_BLOCKS:
            return densenet_imagenet(img_input, nb_classes, layers=layers, **kwargs)
    raise ValueError('unknown model %r; choose one of %s' % (name, ', '.join(MODEL_NAMES)))


def densenet121(img_input, nb_classes=1000, **kwargs):
    return densenet_imagenet(img_input, nb_classes, layers=121, **kwargs)


def densenet169(img_input, nb_classes=1000, **kwargs):
    return densenet_imagenet(img_input, nb_classes, layers=169, **kwargs)


def densenet201(img_input, nb_classes=1000, **kwargs):
    return densenet_imagenet(img_input, nb_classes, layers=201, **kwargs)


def densenet264(img_input, nb_classes=1000, **kwargs):
    return densenet_imagenet(img_input, nb_classes, layers=264, **kwargs)
