"""Reader of the IDX files MNIST and Fashion-MNIST ship in (gzipped or not), with every check a
damaged or foreign file fails: magic number, shape, length, and images matching labels.

An IDX file is a big-endian header (two zero bytes, a type byte, the number of dimensions, then
one uint32 per dimension) followed by the values; both datasets use unsigned bytes (type 0x08):
images are (N, rows, cols), labels (N,).
"""
import gzip
import os
import struct
import zlib

import numpy as np

from utils.errors import DataError

UBYTE = 0x08


def find(directory, name):
    """`directory/name.gz` or `directory/name`, whichever exists (the .gz first), else None."""
    for candidate in (name + '.gz', name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def read(path, dims):
    """The uint8 array of IDX file `path`, which must have `dims` dimensions; DataError naming the
    file for anything else (wrong magic number or type, truncated, trailing bytes, bad gzip)."""
    try:
        if path.endswith('.gz'):
            with gzip.open(path, 'rb') as f:
                raw = f.read()
        else:
            with open(path, 'rb') as f:
                raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError('%s: unreadable (%s)' % (path, getattr(e, 'strerror', None) or e))
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError('%s: truncated IDX file (%d bytes, the header alone is %d)' % (
            path, len(raw), header))
    zeros, kind, ndim = struct.unpack('>HBB', raw[:4])
    if zeros != 0 or kind != UBYTE or ndim != dims:
        raise DataError('%s: not an IDX file of %d-dimensional unsigned bytes (magic number '
                        '0x%08x, expected 0x%08x)' % (path, dims, struct.unpack('>I', raw[:4])[0],
                                                      UBYTE << 8 | dims))
    shape = struct.unpack('>%dI' % dims, raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError('%s: %s IDX file (%d bytes; its header %s needs %d)' % (
            path, 'truncated' if len(raw) < expected else 'overlong', len(raw),
            'x'.join(map(str, shape)), expected))
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_split(directory, images_name, labels_name, image_size):
    """(images (N, size, size, 1) uint8, labels (N,) uint8, the labels' path) of one split,
    checked for shape and matching, non-zero counts (the caller checks the label values)."""
    paths = []
    for name in (images_name, labels_name):
        path = find(directory, name)
        if path is None:
            raise DataError('%s: missing (expected %s.gz or %s)' % (
                os.path.join(directory, name), name, name))
        paths.append(path)
    images, labels = read(paths[0], 3), read(paths[1], 1)
    if images.shape[1:] != (image_size, image_size):
        raise DataError('%s: images of %dx%d pixels, expected %dx%d' % (
            paths[0], images.shape[1], images.shape[2], image_size, image_size))
    if len(images) != len(labels):
        raise DataError('%s holds %d labels but %s holds %d images' % (
            paths[1], len(labels), paths[0], len(images)))
    if len(labels) == 0:
        raise DataError('%s: no images' % paths[0])
    return images[..., None], labels, paths[1]
