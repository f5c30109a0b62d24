"""Export a checkpoint as a frozen graph (and SavedModel), or classify images with a frozen graph.

    python export.py --model_dir runs/digits --output digits.pb [--saved_model DIR]
    python export.py --init_from_keras densenet121.h5 --model densenet121 --output in1k.pb
    python export.py --predict digits.pb image1.png image2.jpg
"""

from utils.cli import run_main


def parse_args(argv):
    from models.keras_import import KERAS_MODELS
    from utils import flags
    parser = flags.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model_dir', default='runs/model')
    parser.add_argument('--checkpoint', default=None, help='default: the latest in --model_dir')
    parser.add_argument('--output', default=None, help='frozen GraphDef (.pb) to write')
    parser.add_argument('--saved_model', default=None, help='SavedModel directory to write')
    parser.add_argument('--predict', default=None, metavar='MODEL_PB',
                        help='classify the images given after the flags with this frozen graph')
    flags.add_keras_flag(parser, 'export instead of a checkpoint (an ImageNet classifier)')
    parser.add_argument('--model', choices=KERAS_MODELS, default='densenet121',
                        help='the architecture of --init_from_keras')
    parser.add_argument('--image_size', type=flags.positive_int, default=224,
                        help='input size of the graph exported from --init_from_keras')
    parser.add_argument('--top_k', type=flags.positive_int, default=3)
    parser.add_argument('--debug', default=False)
    parser.add_argument('images', nargs='*')
    args = parser.parse_args(argv)
    if not (args.predict or args.output or args.saved_model):
        parser.error('give --output and/or --saved_model to export, or --predict MODEL_PB')
    if args.predict and not args.images:
        parser.error('--predict needs image files')
    return args


def main(argv):
    args = parse_args(argv)
    if args.predict:
        from utils.predict import Predictor, read_images
        predictor = Predictor(args.predict)
        images = read_images(args.images, predictor.image_shape)
        for path, (classes, probs) in zip(args.images, predictor.top_k(images, args.top_k)):
            print('%s: %s' % (path, ', '.join('%d (%.3f)' % cp for cp in zip(classes, probs))))
        return
    from utils import data, export, flags, run_loop
    from utils.checkpoints import CheckpointError, find_checkpoint
    if args.init_from_keras:
        from models.keras_import import check_source
        check_source(args.init_from_keras, args.model)
        checkpoint, spec = None, data.spec('imagenet', args.image_size)
        config = run_loop.RunConfig(model=args.model, data_format='channels_last',
                                    init_from_keras=args.init_from_keras)
    else:
        checkpoint = find_checkpoint(args.model_dir, args.checkpoint)
        saved = flags.load_config(args.model_dir)
        if not saved:
            raise CheckpointError('%s: no %s (written by train.py) to say which model this is'
                                  % (args.model_dir, flags.CONFIG_FILE))
        name, synthetic_like = flags.saved_dataset(saved)
        spec = data.spec(synthetic_like or name, saved.get('image_size'))
        config = run_loop.RunConfig(model=saved['model'], depth=saved['depth'],
                                    growth_rate=saved['growth_rate'],
                                    data_format='channels_last',
                                    mfm_transitions=saved.get('mfm_transitions'),
                                    mfm_layers=saved.get('mfm_layers'))
    if args.output:
        graph_def = export.freeze(checkpoint, spec, config)
        size = export.write_frozen(graph_def, args.output)
        print('wrote %s (%.1f MB): input %r float32 [None, %s] raw pixels -> %r, %r' % (
            args.output, size / 1e6, export.INPUT, ', '.join(map(str, spec.image_shape)),
            export.LOGITS, export.PROBABILITIES))
    if args.saved_model:
        export.write_saved_model(checkpoint, spec, config, args.saved_model)
        print('wrote SavedModel %s: serving_default images -> logits, probabilities, classes'
              % args.saved_model)


if __name__ == '__main__':
    run_main(main)
