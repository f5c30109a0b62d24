"""ImageNet from TFRecord shards in the standard layout, each shard's first record checked before
a run starts."""
import glob
import os

from models.compat import tf
from models.presets import IMAGENET_MEAN, IMAGENET_STD
from utils.data.base import Dataset
from utils.errors import DataError, first_line


def _check_first_record(path, keys, num_classes):
    """DataError unless `path`'s first record is intact (CRCs) and a tf.train.Example with `keys`
    and a 1-based label up to `num_classes`: a wrong or damaged file is named before training (a
    later corrupt record stops the run)."""
    try:
        record = next(iter(tf.io.tf_record_iterator(path)), None)
        example = tf.train.Example.FromString(record) if record is not None else None
    except (tf.errors.OpError, ValueError) as e:  # DecodeError is a ValueError
        raise DataError('%s: not a readable TFRecord file of tf.train.Examples (%s)' % (
            path, first_line(e)))
    if example is None:
        raise DataError('%s: empty TFRecord file' % path)
    missing = [k for k in keys if k not in example.features.feature]
    if missing:
        raise DataError('%s: records lack %s' % (path, ', '.join(missing)))
    label = list(example.features.feature['image/class/label'].int64_list.value)
    if len(label) != 1 or not 1 <= label[0] <= num_classes:
        raise DataError('%s: first record\'s image/class/label is %s, expected one of 1..%d' % (
            path, label[0] if len(label) == 1 else label, num_classes))


class ImageNet(Dataset):
    """TFRecord shards in the standard layout: train-* and validation-*, with image/encoded (JPEG
    or PNG) and image/class/label (1-based; 0 is the background class in some exports)."""
    name = 'imagenet'
    image_shape = (224, 224, 3)  # the default; --image_size sets another
    num_classes = 1000
    train_size = 1281167
    test_size = 50000
    # ImageNet's channel statistics, as torchvision and tf.keras' DenseNets ("torch" mode)
    # normalise: imported Keras weights see the inputs they were trained on.
    mean = list(IMAGENET_MEAN)
    std = list(IMAGENET_STD)

    def __init__(self, data_dir, image_size=224):
        self.dir = data_dir or ''
        self.image_shape = (image_size, image_size, 3)
        self._shards = {}  # training (bool) -> sorted shard paths
        for training, prefix in ((True, 'train'), (False, 'validation')):
            shards = sorted(glob.glob(os.path.join(self.dir, prefix + '-*')))
            if not shards:
                raise DataError('%s: no %s-* TFRecord shards (expected the standard ImageNet '
                                'layout: train-00000-of-01024 ..., validation-00000-of-00128 ...)'
                                % (self.dir or '(no --data_dir)', prefix))
            for shard in shards:
                _check_first_record(shard, ('image/encoded', 'image/class/label'),
                                    self.num_classes)
            self._shards[training] = shards

    def _examples(self, training):
        files = self._shards[training]
        ds = tf.data.Dataset.from_tensor_slices(files)
        if training:
            ds = ds.shuffle(len(files))
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)))
        features = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
                    'image/class/label': tf.io.FixedLenFeature([], tf.int64)}

        def parse(record):
            parsed = tf.io.parse_single_example(record, features)
            return parsed['image/encoded'], tf.cast(parsed['image/class/label'] - 1, tf.int32)
        return ds.map(parse)

    def _preprocess(self, encoded, training):
        size = self.image_shape[0]
        image = tf.image.decode_image(encoded, channels=3, expand_animations=False)
        if training:
            begin, crop, _ = tf.image.sample_distorted_bounding_box(
                tf.shape(image), tf.zeros([0, 0, 4]), min_object_covered=0.1,
                aspect_ratio_range=(3. / 4, 4. / 3), area_range=(0.08, 1.0),
                max_attempts=10, use_image_if_no_bounding_boxes=True)
            image = tf.slice(image, begin, crop)
            image = tf.image.resize(image, [size, size])
            image = tf.image.random_flip_left_right(image)
        else:
            # Resize the shorter side to size / 0.875, then take the central size x size crop.
            shape = tf.cast(tf.shape(image)[:2], tf.float32)
            scale = (size / 0.875) / tf.reduce_min(shape)
            new = tf.cast(tf.round(shape * scale), tf.int32)
            image = tf.image.resize(image, new)
            top, left = (new[0] - size) // 2, (new[1] - size) // 2
            image = image[top:top + size, left:left + size]
        image.set_shape([size, size, 3])
        return tf.cast(image, tf.float32)
