"""Fetch a dataset's official files and check their size and MD5: CIFAR's archive (extracted
safely), MNIST's and Fashion-MNIST's four IDX files (kept gzipped, as the reader takes them).

Every download is bounded: no more bytes than the file's known size (MAX_BYTES where it is not
known), response headers within STALL_SECONDS of the request, and a body that brings fewer than
STALL_BYTES in STALL_SECONDS is abandoned, so a trickling or endless server ends in one line,
not a hang or a full disk; a file:// address must name a regular file (not a FIFO). The partial
file is removed on every way out, SIGTERM included. DENSENET_DATA_MIRROR=URL (a directory
holding the files by their official names) is tried before the official addresses.
"""
import hashlib
import http.client
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from utils import files
from utils.data.termination import interruptible, sigterm_unwinds
from utils.errors import DataError
from utils.log import LOG

MIRROR_ENV = 'DENSENET_DATA_MIRROR'
MAX_BYTES = 2 ** 30
STALL_SECONDS = 60.0
STALL_BYTES = 64 * 1024

_BASE = 'https://www.cs.toronto.edu/~kriz/'
# dataset -> (archive, size in bytes, md5, directory it unpacks to); the binary releases.
ARCHIVES = {
    'cifar10': ('cifar-10-binary.tar.gz', 170052171, 'c32a1d4ab5d03f1284b67883e8d87530',
                'cifar-10-batches-bin'),
    'cifar100': ('cifar-100-binary.tar.gz', 168513733, '03b5dce01913d631647c71ecec9e9cb8',
                 'cifar-100-binary'),
}
# dataset -> (addresses tried in order, {file: md5}). MNIST's own site now refuses most
# downloads, so its mirror (the one torchvision uses) comes first. IDX_SIZES: their sizes.
IDX_FILES = {
    'fashion_mnist': (('http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',), {
        'train-images-idx3-ubyte.gz': '8d4fb7e6c68d591d4c3dfef9ec88bf0d',
        'train-labels-idx1-ubyte.gz': '25c81989df183df01b3e8a0aad5dffbe',
        't10k-images-idx3-ubyte.gz': 'bef4ecab320f06d8554ea6380940ec79',
        't10k-labels-idx1-ubyte.gz': 'bb300cfdad3c16e7a12a480ee83cd310'}),
    'mnist': (('https://ossci-datasets.s3.amazonaws.com/mnist/',
               'http://yann.lecun.com/exdb/mnist/'), {
        'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
        'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
        't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
        't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c'}),
}
IDX_SIZES = {
    'fashion_mnist': {'train-images-idx3-ubyte.gz': 26421880, 'train-labels-idx1-ubyte.gz': 29515,
                      't10k-images-idx3-ubyte.gz': 4422102, 't10k-labels-idx1-ubyte.gz': 5148},
    'mnist': {'train-images-idx3-ubyte.gz': 9912422, 'train-labels-idx1-ubyte.gz': 28881,
              't10k-images-idx3-ubyte.gz': 1648877, 't10k-labels-idx1-ubyte.gz': 4542},
}


def mirrored(urls, name):
    """`urls` (addresses of file `name`), after the mirror's copy if DENSENET_DATA_MIRROR is set."""
    mirror = os.environ.get(MIRROR_ENV)
    return ([mirror.rstrip('/') + '/' + name] if mirror else []) + list(urls)


def download(name, data_dir, progress=True):
    """Fetches dataset `name` (cifar10, cifar100, mnist, fashion_mnist) into `data_dir` unless it
    is already there; returns the directory to read it from (CIFAR's archive unpacks into a
    directory of its own inside `data_dir`)."""
    if name in ARCHIVES:
        return download_cifar(name, data_dir, progress=progress)
    return download_idx(name, data_dir, progress=progress)


def download_idx(name, data_dir, base_urls=None, md5s=None, progress=True):
    """Fetches each of `name`'s four IDX files that `data_dir` lacks (gzipped or not), checking
    its MD5, and returns `data_dir`. `base_urls` and `md5s` override the official ones."""
    official_urls, official_md5s = IDX_FILES[name]
    base_urls, md5s = base_urls or official_urls, md5s or official_md5s
    for archive, md5 in sorted(md5s.items()):
        if any(os.path.isfile(os.path.join(data_dir, n)) for n in (archive, archive[:-3])):
            continue
        size = IDX_SIZES[name][archive] if md5 == official_md5s.get(archive) else None
        errors = []
        for url in mirrored([base + archive for base in base_urls], archive):
            try:
                _download_file(url, data_dir, archive, size, md5, progress)
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError('; '.join(errors))
    return data_dir


def _download_file(url, data_dir, name, size, md5, progress, then=None):
    """Downloads `url` to a temporary file in `data_dir`, checks its size (unless None) and MD5,
    then calls `then(temporary path)` if given, else renames it to `name`. A failed, bad or
    interrupted download leaves nothing behind."""
    with sigterm_unwinds():
        try:
            os.makedirs(data_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=name + '.', suffix='.part', dir=data_dir)
        except OSError as e:
            raise DataError('cannot download into --data_dir %s: %s' % (data_dir,
                                                                       e.strerror or e))
        try:
            with os.fdopen(fd, 'wb') as out:
                digest = _fetch(url, out, size, progress)
            _check(url, tmp, size, digest, md5)
            if then is not None:
                then(tmp)
            else:
                os.replace(tmp, os.path.join(data_dir, name))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def _check(url, path, size, digest, md5):
    got = os.path.getsize(path)
    if size is not None and got != size:
        raise DataError('%s: got %d bytes, expected %d' % (url, got, size))
    if digest != md5:
        raise DataError('%s: MD5 %s, expected %s (corrupt or wrong file)' % (url, digest, md5))


def download_cifar(name, data_dir, url=None, size=None, md5=None, progress=True):
    """Downloads and extracts `name` into `data_dir` unless it is already there; returns the
    extracted directory. `url`, `size` and `md5` override the official archive's (for mirrors)."""
    archive, official_size, official_md5, subdir = ARCHIVES[name]
    target = os.path.join(data_dir, subdir)
    if os.path.isdir(target):
        return target
    official = url is None
    md5 = md5 or official_md5
    errors = []
    for url in mirrored([_BASE + archive], archive) if official else [url]:
        try:
            _download_file(url, data_dir, archive, official_size if official else size, md5,
                           progress, then=lambda path: _extract(path, data_dir, subdir))
            break
        except DataError as e:
            errors.append(str(e))
    else:
        raise DataError('; '.join(errors))
    if not os.path.isdir(target):
        raise DataError('%s: the archive has no %s/ directory' % (url, subdir))
    return target


def _fetch(url, out, size, progress):
    """Copies `url` into file `out` and returns its MD5; DataError beyond `size` (or MAX_BYTES)
    bytes, or when fewer than STALL_BYTES arrive in STALL_SECONDS."""
    limit = MAX_BYTES if size is None else size
    md5 = hashlib.md5()
    response = _open(url)
    with response:
        announced = int(response.headers.get('Content-Length') or 0) or None
        if announced and announced > limit:
            raise DataError('%s: the server announces %d bytes, expected %s' % (
                url, announced, size if size is not None else 'at most %d' % MAX_BYTES))
        LOG.info('downloading %s (%s)', url, '%.1f MB' % ((announced or size) / 1e6)
                 if announced or size else 'size unknown')
        from tqdm import tqdm
        with tqdm(total=announced or size, unit='B', unit_scale=True,
                  desc=os.path.basename(url), disable=None if progress else True) as bar:
            _copy(url, response, out, md5, limit, bar)
    return md5.hexdigest()


def _open(url):
    """The response to `url`, its headers read; DataError if it fails, if the headers take
    more than STALL_SECONDS (the socket's timeout bounds each read, not a server that sends a
    byte a minute), or if a file:// address is no regular file (opening a FIFO waits)."""
    parsed = urllib.parse.urlparse(url)
    sockets, late = [], threading.Event()
    try:
        if parsed.scheme == 'file':
            mode = os.stat(urllib.request.url2pathname(parsed.path)).st_mode
            if not stat.S_ISREG(mode):
                raise DataError('%s: %s, not a file to download' % (url, files.describe(mode)))
            with interruptible():
                return urllib.request.urlopen(url)
        timer = threading.Timer(STALL_SECONDS, _hang_up, (sockets, late))
        timer.start()
        try:
            with interruptible():
                response = _opener(sockets).open(url, timeout=STALL_SECONDS)
        finally:
            timer.cancel()
        if late.is_set():  # cut off inside a header line, which http.client may take as whole
            response.close()
            raise OSError('cut off')
        return response
    except (OSError, ValueError, http.client.HTTPException) as e:
        if late.is_set():
            raise DataError('%s: no response headers within %g s; stopped' % (url, STALL_SECONDS))
        raise DataError('%s: download failed (%s)' % (url, e))


def _hang_up(sockets, late):
    late.set()
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns: http.client gives up
        except OSError:
            pass


def _opener(sockets):
    """A urllib opener whose HTTP(S) connections add their sockets to `sockets`."""
    def recorded(connection):
        class Recorded(connection):
            def connect(self):
                super(Recorded, self).connect()
                sockets.append(self.sock)
        return Recorded

    class Handler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(recorded(http.client.HTTPConnection), req)

    class SecureHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(recorded(http.client.HTTPSConnection), req,
                                context=self._context)
    return urllib.request.build_opener(Handler, SecureHandler)


def _copy(url, response, out, md5, limit, bar):
    got, window_start, window_bytes = 0, time.monotonic(), 0
    while True:
        try:
            with interruptible():
                chunk = response.read1(1 << 16)
        except OSError as e:  # socket.timeout included: nothing for STALL_SECONDS
            raise DataError('%s: download failed after %d bytes (%s)' % (url, got, e))
        if not chunk:
            return
        got += len(chunk)
        if got > limit:
            raise DataError('%s: more than the %d bytes expected; stopped' % (url, limit))
        out.write(chunk)
        md5.update(chunk)
        bar.update(len(chunk))
        window_bytes += len(chunk)
        if window_bytes >= STALL_BYTES:
            window_start, window_bytes = time.monotonic(), 0
        elif time.monotonic() - window_start > STALL_SECONDS:
            raise DataError('%s: stalled (%d bytes in the last %g s); stopped after %d bytes'
                            % (url, window_bytes, STALL_SECONDS, got))


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
