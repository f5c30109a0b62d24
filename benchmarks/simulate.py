"""Each mode's training step on a SIMULATED GPU: TensorFlow's own roofline cost model, not a
measurement (no GPU is needed, or used).

    python -m benchmarks.simulate                      # BC-40/100/250 k=12 b64, V100 and A100
    python -m benchmarks.simulate --depths 100 --gpus V100 --modes naive efficient

Grappler's virtual cluster (`tensorflow.python.grappler.cluster.Cluster` with the GPU's
`DeviceProperties`) predicts each op of the training step's graph from its FLOPs and the bytes
it reads and writes (the larger of the two times: a roofline), and schedules the graph as
TensorFlow's executor would (`MeasureCosts`). It knows no kernels (cuDNN's algorithms, fusion,
launch overhead), so only ratios between modes mean much: label them as simulated. Beside the
time, the bytes the step moves (the model's memory traffic) and its op count: a change that
lowers the simulated time must lower these too, or it is the model's blind spot, not a gain.

The graph is built as on a GPU, channels_first (TensorFlow's CPU kernels cannot run it, but
nothing here runs), one Nesterov-SGD step with the batch-norm updates, as `benchmarks.memory`.
"""
import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from benchmarks.memory import MODES, SETTINGS, add_network_args, train_step  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Gpu(object):
    """What the cost model reads of a GPU: SMs, clock, memory bandwidth and size, and the
    compute capability (the model takes 64 FP32 cores per SM from 6.0 on)."""
    name: str
    sms: int
    mhz: int
    gb_per_s: int
    memory_gib: int
    architecture: str
    l2_bytes: int
    shared_per_sm: int

    def properties(self):
        from tensorflow.core.protobuf import device_properties_pb2
        return device_properties_pb2.DeviceProperties(
            type='GPU', vendor='NVIDIA', model=self.name, frequency=self.mhz,
            num_cores=self.sms, num_registers=65536, l1_cache_size=24576,
            l2_cache_size=self.l2_bytes, shared_memory_size_per_multiprocessor=self.shared_per_sm,
            memory_size=self.memory_gib * 2 ** 30, bandwidth=self.gb_per_s * 10 ** 6,  # KB/s
            environment={'architecture': self.architecture, 'cuda': '10000', 'cudnn': '7000'})


GPUS = dict((gpu.name, gpu) for gpu in (
    Gpu('V100', sms=80, mhz=1530, gb_per_s=900, memory_gib=16, architecture='7',
        l2_bytes=6 * 2 ** 20, shared_per_sm=96 * 1024),
    Gpu('A100', sms=108, mhz=1410, gb_per_s=1555, memory_gib=40, architecture='8',
        l2_bytes=40 * 2 ** 20, shared_per_sm=164 * 1024),
))
DEVICE = '/job:localhost/replica:0/task:0/device:GPU:0'


def step_graph(depth, growth_rate, mode, batch, image_size, data_format='channels_first'):
    """(meta graph of one training step of DenseNet-BC-`depth` in `mode`, its op count, build
    seconds); the train op is in the collection 'train_op', where the cost model looks."""
    import models
    from models.compat import tf
    with tf.Graph().as_default() as graph:
        shape = ([batch, 3, image_size, image_size] if data_format == 'channels_first' else
                 [batch, image_size, image_size, 3])
        images = tf.placeholder(tf.float32, shape, name='images')
        labels = tf.placeholder(tf.int32, [batch], name='labels')
        start, inputs = time.time(), len(graph.get_operations())
        logits = models.densenet_bc(images, 10, depth=depth, growth_rate=growth_rate,
                                    efficient=SETTINGS[mode], data_format=data_format)()
        loss = tf.losses.sparse_softmax_cross_entropy(labels, logits)
        train = train_step(loss)
        build_s, ops = time.time() - start, len(graph.get_operations()) - inputs
        tf.add_to_collection('train_op', train)
        return tf.train.export_meta_graph(graph=graph), ops, build_s


def simulate(meta_graph, gpu):
    """dict(time_ms, gbytes) of the step in `meta_graph` on `gpu` (a Gpu), as Grappler's
    analytical cost model predicts it: the scheduled step's time, and the bytes its ops read and
    write (from their tensors' shapes: the model's own times are rounded to a microsecond)."""
    from tensorflow.python.grappler import cluster, item
    from tensorflow.core.protobuf import device_properties_pb2
    device = device_properties_pb2.NamedDevice(name=DEVICE, properties=gpu.properties())
    virtual = cluster.Cluster(devices=[device])
    op_perfs, run_time, _ = virtual.MeasureCosts(item.Item(meta_graph, ignore_colocation=True))
    return dict(time_ms=run_time * 1e3, gbytes=sum(map(_bytes, op_perfs)) * 1e-9)


def _bytes(op_perf):
    """The bytes an op reads (its inputs of known shape) and writes."""
    from tensorflow.python.framework import dtypes
    total = sum(op_perf.op_memory.output_memory)
    for tensor in op_perf.op.inputs:
        dtype = dtypes.as_dtype(tensor.dtype)
        dims = [d.size for d in tensor.shape.dim]
        if dtype.is_numpy_compatible and not tensor.shape.unknown_rank and \
                all(d >= 0 for d in dims):
            total += int(np.prod(dims)) * dtype.size
    return total


def run(args, log=print):
    """The table, a row per depth and GPU, every mode's time, bytes and ops; returns the rows."""
    rows = []
    names = ' / '.join(args.modes)
    log('| L | GPU | simulated ms %s | %s | GB moved %s | ops %s |' % (
        names, ' | '.join('%s/%s' % (m, args.modes[0]) for m in args.modes[1:]), names, names))
    log('|' + '---|' * (5 + len(args.modes) - 1))
    for depth in args.depths:
        graphs = dict((mode, step_graph(depth, args.growth_rate, mode, args.batch_size,
                                        args.image_size)) for mode in args.modes)
        for name in args.gpus:
            results = {}
            for mode in args.modes:
                meta_graph, ops, build_s = graphs[mode]
                results[mode] = dict(simulate(meta_graph, GPUS[name]), ops=ops, build_s=build_s)
                rows.append(dict(depth=depth, gpu=name, mode=mode, **results[mode]))
            log(_line(depth, name, args.modes, results))
    return rows


def _line(depth, gpu, modes, results):
    def cells(key, digits):
        return ' / '.join('%.*f' % (digits, results[m][key]) for m in modes)
    base = results[modes[0]]['time_ms']
    ratios = ' | '.join('%.2fx' % (results[m]['time_ms'] / base) for m in modes[1:])
    return '| %d | %s | %s | %s | %s | %s |' % (
        depth, gpu, cells('time_ms', 2), ratios, cells('gbytes', 2),
        ' / '.join(format(results[m]['ops'], ',') for m in modes))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_network_args(parser)
    parser.add_argument('--gpus', nargs='*', default=list(GPUS), choices=list(GPUS))
    parser.add_argument('--modes', nargs='*', default=list(MODES), choices=MODES,
                        help='the first is the base of the ratios')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from models import compat
    print('DenseNet-BC k=%d, batch %d, %dx%d, channels_first, one Nesterov-SGD step; SIMULATED '
          '(Grappler analytical cost model, TensorFlow %s), not measured' % (
              args.growth_rate, args.batch_size, args.image_size, args.image_size,
              compat.VERSION))
    run(args, log=lambda line: print(line, flush=True))


if __name__ == '__main__':
    main()
