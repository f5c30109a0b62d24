"""Fetch a CIFAR release, check its size and MD5, and extract it safely."""
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request

from utils.errors import DataError

_BASE = 'https://www.cs.toronto.edu/~kriz/'
# dataset -> (archive, size in bytes, md5, directory it unpacks to); the binary releases.
ARCHIVES = {
    'cifar10': ('cifar-10-binary.tar.gz', 170052171, 'c32a1d4ab5d03f1284b67883e8d87530',
                'cifar-10-batches-bin'),
    'cifar100': ('cifar-100-binary.tar.gz', 168513733, '03b5dce01913d631647c71ecec9e9cb8',
                 'cifar-100-binary'),
}


def download_cifar(name, data_dir, url=None, size=None, md5=None, progress=True):
    """Downloads and extracts `name` into `data_dir` unless it is already there; returns the
    extracted directory. `url`, `size` and `md5` override the official archive's (for mirrors)."""
    archive, official_size, official_md5, subdir = ARCHIVES[name]
    target = os.path.join(data_dir, subdir)
    if os.path.isdir(target):
        return target
    url = url or _BASE + archive
    size = official_size if size is None and url == _BASE + archive else size
    md5 = md5 or official_md5
    try:
        os.makedirs(data_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=archive + '.', suffix='.part', dir=data_dir)
    except OSError as e:
        raise DataError('cannot download into --data_dir %s: %s' % (data_dir, e.strerror or e))
    try:
        with os.fdopen(fd, 'wb') as out:
            digest = _fetch(url, out, progress)
        got = os.path.getsize(tmp)
        if size is not None and got != size:
            raise DataError('%s: got %d bytes, expected %d' % (url, got, size))
        if digest != md5:
            raise DataError('%s: MD5 %s, expected %s (corrupt or wrong file)' % (url, digest, md5))
        _extract(tmp, data_dir, subdir)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if not os.path.isdir(target):
        raise DataError('%s: the archive has no %s/ directory' % (url, subdir))
    return target


def _fetch(url, out, progress):
    md5 = hashlib.md5()
    try:
        response = urllib.request.urlopen(url, timeout=60)
    except (OSError, ValueError) as e:
        raise DataError('%s: download failed (%s)' % (url, e))
    with response:
        total = int(response.headers.get('Content-Length') or 0) or None
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit='B', unit_scale=True, desc=os.path.basename(url),
                       disable=None)
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
            md5.update(chunk)
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    return md5.hexdigest()


def _extract(path, data_dir, subdir):
    """Extracts only regular files and directories under `subdir/`; refuses links, absolute
    paths and '..' so that an archive cannot write outside `data_dir`."""
    staging = tempfile.mkdtemp(prefix='extract.', dir=data_dir)
    try:
        with tarfile.open(path, 'r:*') as tar:
            members = tar.getmembers()
            for member in members:
                name = os.path.normpath(member.name)
                if (os.path.isabs(name) or name.startswith('..') or
                        not (member.isfile() or member.isdir())):
                    raise DataError('%s: refusing archive member %r' % (path, member.name))
            tar.extractall(staging, members=members)
        src = os.path.join(staging, subdir)
        if os.path.isdir(src):
            shutil.move(src, os.path.join(data_dir, subdir))
    except tarfile.TarError as e:
        raise DataError('%s: not a readable tar.gz archive (%s)' % (path, e))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
