"""Export a checkpoint as a frozen graph (and SavedModel), or classify images with a frozen graph.

    python export.py --model_dir runs/digits --output digits.pb [--saved_model DIR]
    python export.py --init_from_keras densenet121.h5 --model densenet121 --output in1k.pb
    python export.py --predict digits.pb image1.png image2.jpg
"""
import sys

from utils import cli  # the rest, TensorFlow included, inside: Ctrl-C there is one line


def parse_args(argv):
    from utils import flags
    from models.keras_import import KERAS_MODELS
    parser = flags.ArgumentParser(prog='export.py', description=__doc__.splitlines()[0])
    parser.add_argument('--model_dir', default='runs/model')
    parser.add_argument('--checkpoint', default=None, help='default: the latest in --model_dir')
    parser.add_argument('--output', default=None, help='frozen GraphDef (.pb) to write')
    parser.add_argument('--saved_model', default=None, help='SavedModel directory to write')
    parser.add_argument('--predict', default=None, metavar='MODEL_PB',
                        help='classify the images given after the flags with this frozen graph')
    flags.add_keras_flag(parser, 'export instead of a checkpoint (an ImageNet classifier)')
    parser.add_argument('--model', choices=KERAS_MODELS, default=None,
                        help='the architecture of --init_from_keras (default densenet121)')
    parser.add_argument('--image_size', type=flags.positive_int, default=None,
                        help='input size of the graph exported from --init_from_keras '
                             '(default 224)')
    parser.add_argument('--top_k', type=flags.positive_int, default=3)
    flags.add_debug_flag(parser)
    parser.add_argument('images', nargs='*')
    args = parser.parse_args(argv)
    if not (args.predict or args.output or args.saved_model):
        parser.error('give --output and/or --saved_model to export, or --predict MODEL_PB')
    if args.predict and not args.images:
        parser.error('--predict needs image files')
    return args


def run(args):
    if args.predict:
        from utils.predict import Predictor, read_images
        predictor = Predictor(args.predict)
        images = read_images(args.images, predictor.image_shape)
        for path, (classes, probs) in zip(args.images, predictor.top_k(images, args.top_k)):
            cli.LOG.info('%s: %s', path, ', '.join('%d (%.3f)' % cp for cp in zip(classes, probs)))
        return
    from utils import data, export, flags
    from utils.checkpoints import find_checkpoint
    from utils.config import CONFIG_FILE, ModelConfig
    from utils.errors import CheckpointError
    if args.init_from_keras:
        model = flags.resolve_model(args, default_dataset='imagenet')
        flags.check_keras_source(args.init_from_keras, model.model)
        checkpoint = None
    else:
        checkpoint = find_checkpoint(args.model_dir, args.checkpoint)
        saved = ModelConfig.load(args.model_dir)
        if not saved:
            raise CheckpointError('%s: no %s (written by train.py) to say which model this is'
                                  % (args.model_dir, CONFIG_FILE))
        model = flags.resolve_model(args, saved)
    spec = data.spec(model.dataset, model.image_size)
    graph_def = export.freeze(checkpoint, spec, model, args.init_from_keras)
    if args.output:
        size = export.write_frozen(graph_def, args.output)
        cli.LOG.info('wrote %s (%.1f MB): input %r float32 [None, %s] raw pixels -> %r, %r',
                     args.output, size / 1e6, export.INPUT, ', '.join(map(str, spec.image_shape)),
                     export.LOGITS, export.PROBABILITIES)
    if args.saved_model:
        export.write_saved_model(graph_def, args.saved_model)
        cli.LOG.info('wrote SavedModel %s: serving_default images -> logits, probabilities, '
                     'classes', args.saved_model)


def main(argv=None):
    return cli.run_main(parse_args, run, argv)


if __name__ == '__main__':
    sys.exit(main())
