"""The configurations: ModelConfig (config.json) and TrainConfig, and how train.py, eval.py and
export.py resolve flags, a saved config.json and the dataset's defaults into them."""
import argparse
import dataclasses
import json
import os
import re
import shutil

import pytest

import eval as eval_script
import export
import train
from conftest import DIGITS_BC16, ROOT
from models import Recomputation
from models.compat import tf
from utils import checkpoints, data, inference, optimizer, resolve
from utils.config import ModelConfig, TrainConfig
from utils.errors import CheckpointError, UsageError

# What the previous release wrote: the architecture and every training flag, with a synthetic
# run's dataset spelled 'synthetic-cifar10'.
PREVIOUS_CONFIG_JSON = {
    'batch_size': 2, 'data_format': None, 'dataset': 'synthetic-cifar10', 'depth': 16,
    'dropout_rate': 0.0, 'efficient': 'every=2', 'epochs_per_eval': 0.0, 'fp16': False,
    'growth_rate': 4, 'image_size': 32, 'init_from_keras': None, 'inject_nan': None,
    'learning_rate': 0.0015625, 'log_every_steps': 50, 'max_steps': 1, 'mfm_layers': [],
    'mfm_transitions': [2], 'model': 'densenet_bc', 'model_dir': '/tmp/old1', 'momentum': 0.9,
    'num_classes': 10, 'save_checkpoint_steps': 500, 'seed': None, 'train_epochs': 1,
    'weight_decay': 0.0001}
PREVIOUS_RUN = os.path.join(ROOT, 'tests', 'data', 'v9_fp16')  # previous release, fp16, step 3


def test_model_config_round_trips_through_json(tmp_path):
    config = ModelConfig(dataset='cifar100', synthetic=True, model='densenet_bc', depth=100,
                         growth_rate=12, num_classes=100, image_size=32, mfm_transitions=[2],
                         mfm_layers={3, 2})
    assert config.mfm_layers == (2, 3) and config.mfm_transitions == (2,)
    assert ModelConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    config.save(str(tmp_path))
    with open(str(tmp_path / 'config.json')) as f:
        assert json.load(f) == config.to_json()
    assert ModelConfig.load(str(tmp_path)) == config
    assert ModelConfig.load(str(tmp_path / 'none')) is None


def test_a_config_json_of_the_previous_release_loads():
    config = ModelConfig.from_json(PREVIOUS_CONFIG_JSON)
    assert config == ModelConfig(dataset='cifar10', synthetic=True, model='densenet_bc',
                                 depth=16, growth_rate=4, num_classes=10, image_size=32,
                                 mfm_transitions=(2,))
    assert config.data_name == 'synthetic'
    before_mfm = dict(PREVIOUS_CONFIG_JSON, dataset='digits')
    del before_mfm['mfm_layers'], before_mfm['mfm_transitions']
    assert ModelConfig.from_json(before_mfm).mfm_layers == ()


def test_a_broken_config_json_is_named(tmp_path):
    def load(values):
        with open(str(tmp_path / 'config.json'), 'w') as f:
            f.write(values if isinstance(values, str) else json.dumps(values))
        return ModelConfig.load(str(tmp_path))
    for change, message in (
            (dict(depth=None), r'depth must be an integer in \[1, 3000\], got None'),
            (dict(growth_rate=-4), r'growth_rate must be an integer in \[1, 1024\], got -4'),
            (dict(depth=3004), r'depth must be an integer in \[1, 3000\], got 3004'),
            (dict(depth=10 ** 400), r'depth must be an integer in \[1, 3000\], got 1000000000'),
            (dict(image_size=1e300), r'image_size must be an integer in \[1, 4096\], got 1e\+300'),
            (dict(dataset='nope'), r'unknown dataset \'nope\' \(one of digits, mnist, '),
            (dict(model='resnet'), r'unknown model \'resnet\' \(one of densenet_bc, '),
            (dict(synthetic='no'), r'synthetic must be true or false, got \'no\''),
            (dict(mfm_layers=3), r'mfm_layers must be a list of block numbers, got 3')):
        with pytest.raises(CheckpointError, match=r'config\.json: ' + message):
            load(dict(DIGITS_BC16.to_json(), **change))
    incomplete = DIGITS_BC16.to_json()
    del incomplete['model'], incomplete['depth']
    with pytest.raises(CheckpointError, match=r'config\.json: no model, depth \(not a '
                                              r'config\.json written by train\.py\?\)'):
        load(incomplete)
    with pytest.raises(CheckpointError, match=r'config\.json: unreadable'):
        load('{"dataset": ')
    with pytest.raises(CheckpointError, match=r'config\.json: unreadable \(1e400 is too large'):
        load('{"depth": 1e400}')


@pytest.mark.parametrize('make, reason', [
    (lambda path: os.mkfifo(path), 'a FIFO'),
    (lambda path: os.symlink('/dev/zero', path), 'a character device'),
    (lambda path: os.mkdir(path), 'a directory'),
    (lambda path: open(path, 'w').write(' ' * (2 << 20)), r'2097152 bytes, more than the 1048576'),
], ids=['fifo', 'dev-zero', 'directory', 'huge'])
def test_a_config_json_that_is_no_small_regular_file_is_named_not_read(tmp_path, make, reason):
    make(str(tmp_path / 'config.json'))
    with pytest.raises(CheckpointError, match=r'config\.json: unreadable \(%s' % reason):
        ModelConfig.load(str(tmp_path))


def test_difference_names_each_field_that_differs():
    other = dataclasses.replace(DIGITS_BC16, depth=22, mfm_transitions=(1,))
    assert DIGITS_BC16.difference(DIGITS_BC16) == ''
    assert DIGITS_BC16.difference(other) == 'depth 16 != 22, mfm_transitions [] != [1]'


def test_train_flags_resolve_from_the_dataset_defaults():
    args = train.parse_args(['--dataset', 'synthetic', '--synthetic_like', 'imagenet',
                             '--image_size', '64', '--mfm_layers', '3'])
    model = resolve.model_config(args)
    assert model == ModelConfig(dataset='imagenet', synthetic=True, model='densenet121',
                                depth=121, growth_rate=32, num_classes=1000, image_size=64,
                                mfm_layers=(3,))
    assert model.title == 'DenseNet-121 with MFM at layers 3'
    config = resolve.train_config(args, model, resolve.data_format(None, gpu=False))
    # Synthetic ImageNet: its batch, one epoch, evaluated at the end; 0.1 x batch / 128.
    assert (config.batch_size, config.train_epochs, config.epochs_per_eval) == (256, 1, 1)
    assert config.initial_learning_rate() == pytest.approx(0.2)
    assert config.initial_learning_rate(workers=4) == pytest.approx(0.8)
    assert config.data_format == 'channels_last'
    assert config.efficient == Recomputation(every=1) and config.fp16 is False
    assert config.total_steps(1000, workers=2) == 1  # at least one step per epoch
    digits = resolve.train_config(train.parse_args(['--learning_rate', '0']), DIGITS_BC16,
                                    'channels_last')
    assert (digits.batch_size, digits.train_epochs, digits.epochs_per_eval) == (64, 30, 10)
    assert digits.initial_learning_rate(workers=2) == 0.0
    assert digits.total_steps(resolve.DEFAULTS['digits'].batch_size * 10) == 300


def test_unset_flags_come_from_the_saved_config_and_set_ones_override():
    saved = ModelConfig(dataset='cifar10', synthetic=True, model='densenet_bc', depth=40,
                        growth_rate=6, num_classes=10, image_size=32, mfm_transitions=(2,))
    assert resolve.model_config(eval_script.parse_args([]), saved) == saved
    assert resolve.model_config(train.parse_args([]), saved) == saved
    deeper = resolve.model_config(eval_script.parse_args(['--depth', '100']), saved)
    assert saved.difference(deeper) == 'depth 40 != 100'
    real = resolve.model_config(train.parse_args(['--dataset', 'cifar100']), saved)
    assert (real.dataset, real.synthetic, real.num_classes, real.depth) == (
        'cifar100', False, 100, 40)
    keras = resolve.model_config(argparse.Namespace(model=None, image_size=None),
                                default_dataset='imagenet')
    assert (keras.model, keras.image_size, keras.num_classes) == ('densenet121', 224, 1000)


@pytest.mark.parametrize('argv, message', [
    (['--depth', '41'], r'depth=41 does not fit a DenseNet-B with 3 blocks'),
    (['--depth', '22', '--growth_rate', '5', '--mfm_transitions', '1'],
     r'MFM needs an even channel count, got 25 channels at densenet/transition1'),
    (['--mfm_layers', '4'], r'mfm_layers: block 4 is out of range \(1\.\.3\)'),
    (['--efficient', 'blocks=4'], r"efficient='blocks=4': block 4 is out of range \(1\.\.3\)"),
    (['--efficient', 'shared', '--mfm_transitions', '2'],
     r"efficient='shared' .* use efficient=True with mfm_transitions"),
])
def test_a_model_that_cannot_be_built_is_refused_at_the_edge(argv, message):
    args = train.parse_args(argv)
    with pytest.raises(UsageError, match=message):
        resolve.train_config(args, resolve.model_config(args), 'channels_last')


def test_channels_first_needs_a_gpu():
    assert resolve.data_format(None, gpu=True) == 'channels_first'
    assert resolve.data_format('channels_last', gpu=True) == 'channels_last'
    with pytest.raises(UsageError, match='channels_first needs a GPU'):
        resolve.data_format('channels_first', gpu=False)


def test_train_config_defaults_are_the_flags_defaults(tmp_path):
    args = train.parse_args(['--model_dir', str(tmp_path)])
    from_flags = resolve.train_config(args, DIGITS_BC16, 'channels_last')
    assert from_flags == TrainConfig(model_dir=str(tmp_path), batch_size=64, train_epochs=30,
                                     epochs_per_eval=10, learning_rate=None,
                                     data_format='channels_last')
    assert from_flags.initial_learning_rate() == 0.05


def test_fashion_mnist_defaults_are_the_finished_run_in_pretrained():
    """The README's Fashion-MNIST result is pretrained/fashion_mnist; `train.py --dataset
    fashion_mnist` must be that run: train.py accepts the directory as its own, with the same
    batch and schedule, and would stop at the step its final checkpoint holds."""
    model_dir = os.path.join(ROOT, 'pretrained', 'fashion_mnist')
    args = train.parse_args(['--dataset', 'fashion_mnist', '--efficient', 'shared',
                             '--model_dir', model_dir])
    training = resolve.for_train(args, gpu=False)
    with open(os.path.join(model_dir, 'schedule.json')) as f:
        schedule = json.load(f)
    assert (training.config.batch_size, training.config.lr_schedule) == (
        schedule['batch_size'], schedule['lr_schedule'])
    final = checkpoints.latest_checkpoint(model_dir, report=False)
    assert checkpoints.checkpoint_step(final) == training.config.total_steps(
        data.spec('fashion_mnist').train_size, schedule['workers'])


@pytest.mark.slow
def test_train_refuses_a_model_dir_of_another_model_and_resumes_without_flags(trained_run,
                                                                              tmp_path, entry):
    model_dir = str(tmp_path / 'run')
    shutil.copytree(trained_run.model_dir, model_dir)
    before = sorted(os.listdir(model_dir))
    other = entry('train.py', '--model_dir', model_dir, '--max_steps', '44', '--depth', '22',
                  check=False)
    assert other.returncode == 1 and other.stderr == (
        'error: %s holds another model (depth 16 != 22); use a new --model_dir\n' % model_dir)
    assert sorted(os.listdir(model_dir)) == before
    # The architecture comes from config.json: the same command without its flags resumes.
    resumed = entry('train.py', '--model_dir', model_dir, '--max_steps', '44',
                    '--epochs_per_eval', '0', '--batch_size', '32')
    assert 'resuming from' in resumed.stdout and 'DenseNet-BC (L=16, k=4)' in resumed.stdout


@pytest.mark.slow
def test_a_model_dir_of_the_previous_release_resumes_evaluates_and_exports(tmp_path, entry):
    """Checkpoint and config.json written by the previous release (float16, with its loss scale
    variables): the same model, resumed under --fp16, evaluated and exported."""
    model_dir = str(tmp_path / 'v9')
    shutil.copytree(PREVIOUS_RUN, model_dir)
    resumed = entry('train.py', '--model_dir', model_dir, '--max_steps', '5', '--fp16', 'True',
                    '--batch_size', '8', '--epochs_per_eval', '0')
    assert 'resuming from %s at step 3' % os.path.join(model_dir, 'model.ckpt-3') in \
        resumed.stdout
    assert tf.train.load_variable(model_dir, 'global_step') == 5
    assert 1 <= tf.train.load_variable(model_dir, 'loss_scale') <= 2 ** 15
    evaluated = entry('eval.py', '--model_dir', model_dir).stdout
    assert re.search(r'model\.ckpt-5 \(step 5\): loss [\d.]+, top-1 [\d.]+% on 360', evaluated)
    entry('export.py', '--model_dir', model_dir, '--output', str(tmp_path / 'v9.pb'))
    assert os.path.getsize(str(tmp_path / 'v9.pb')) > 10000


@pytest.mark.slow
def test_a_checkpoint_of_another_model_without_config_json_is_refused_untouched(trained_run,
                                                                                 tmp_path, entry):
    """As an Estimator or an older tool leaves a directory: checkpoints, no config.json."""
    model_dir = str(tmp_path / 'run')
    shutil.copytree(trained_run.model_dir, model_dir)
    os.remove(os.path.join(model_dir, 'config.json'))
    before = sorted(os.listdir(model_dir))
    other = entry('train.py', '--model_dir', model_dir, '--max_steps', '44', '--depth', '22',
                  '--growth_rate', '4', check=False)
    assert other.returncode == 1 and re.match(
        r'error: \S+model\.ckpt-40 was written by another architecture: dense block 1 has 2 '
        r'layers there, 3 in this model', other.stderr), other.stderr
    assert sorted(os.listdir(model_dir)) == before


@pytest.mark.parametrize('schedule, expected', [
    ('step', {0: 0.1, 500: 0.1, 501: 0.01, 750: 0.01, 751: 0.001, 1000: 0.001}),
    ('cosine', {0: 0.1, 250: 0.05 * (1 + 2 ** -0.5), 500: 0.05, 750: 0.05 * (1 - 2 ** -0.5),
                1000: 0.0}),
])
def test_learning_rate_schedules(schedule, expected):
    """step: /10 after 50% and 75% of the run; cosine: 0.1 x (1 + cos(pi t / T)) / 2."""
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        rate = optimizer.learning_rate(step, 0.1, 1000, schedule)
        with tf.Session() as sess:
            for t, value in expected.items():
                assert sess.run(rate, {step: t}) == pytest.approx(value, rel=1e-6, abs=1e-9), t


def test_the_schedule_flag_and_the_dataset_default():
    args = train.parse_args(['--lr_schedule', 'cosine'])
    assert resolve.train_config(args, DIGITS_BC16, 'channels_last').lr_schedule == 'cosine'
    digits = resolve.train_config(train.parse_args([]), DIGITS_BC16, 'channels_last')
    assert digits.lr_schedule == resolve.DEFAULTS['digits'].lr_schedule == 'step'


@pytest.mark.parametrize('flag, value', [
    ('--train_epochs', 'inf'), ('--train_epochs', 'nan'), ('--learning_rate', '1e309'),
    ('--learning_rate', '1e39'), ('--weight_decay', '-1'), ('--max_steps', '100000000000000000000'),
    ('--max_steps', '10^20'), ('--batch_size', '2147483648'), ('--momentum', 'x'),
    ('--epochs_per_eval', '1e400'),
])
def test_numbers_that_overflow_are_usage_errors_naming_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as exited:
        train.parse_args([flag, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'argument %s' % flag in err[0] and repr(value) in err[0], err


def test_an_epoch_count_no_run_could_reach_is_refused():
    args = train.parse_args(['--train_epochs', '1e30'])
    config = resolve.train_config(args, DIGITS_BC16, 'channels_last')
    with pytest.raises(UsageError, match=r'--train_epochs 1e\+30 is [\d.e+]+ steps of 64 images; '
                                         r'at most 2147483647 steps'):
        config.total_steps(60000)
    assert resolve.train_config(train.parse_args(['--train_epochs', '1e30', '--max_steps', '5']),
                                DIGITS_BC16, 'channels_last').total_steps(60000) == 5
    huge = resolve.train_config(train.parse_args(['--epochs_per_eval', '1e38']), DIGITS_BC16,
                                'channels_last')
    assert huge.eval_every_steps(60000) == 2 ** 31 - 1


@pytest.mark.parametrize('path, message', [
    ('run[1]', r"'run\[1\]': TensorFlow reads checkpoint paths as glob patterns"),
    ('runs/*', r'glob patterns'), ('x' * 3990, r'a path of \d+ characters .*no room for checkpoint'),
    ('a/' + 'y' * 256, r'its longest name 256'), ('', r'expected a path'),
])
@pytest.mark.parametrize('script', [train, eval_script, export])
def test_a_model_dir_tensorflow_cannot_use_is_refused_up_front(capsys, tmp_path, script, path,
                                                                message):
    with pytest.raises(SystemExit) as exited:
        script.parse_args(['--model_dir', path])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'argument --model_dir' in err[0] and re.search(message, err[0]), err


def test_a_checkpoint_without_a_variable_of_the_graph_is_named(trained_run):
    """The shape check after the layer counts: the first variable of the graph, in build order,
    that the checkpoint lacks."""
    latest = checkpoints.latest_checkpoint(trained_run.model_dir, report=False)
    with tf.Graph().as_default():
        images = tf.placeholder(tf.float32, [None, 8, 8, 1])
        inference.creator(DIGITS_BC16, images, 'channels_last', nb_layers_per_block=3)()
        with pytest.raises(CheckpointError, match=r'model\.ckpt-40 was written by another '
                                                  r'architecture: it has no variable densenet/'
                                                  r'denseblock1/denselayer3/'):
            checkpoints.check_compatible(latest, tf.global_variables())
