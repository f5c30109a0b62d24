"""benchmarks.peers (TF1's own memory savers beside ours) and benchmarks.simulate (the roofline
GPU): their tables on stand-in measurements, the peers' graph changes on tiny real graphs, and
one simulated step. The figures themselves come from the commands in benchmarks/README.md."""
import re

import pytest

from benchmarks import peer_methods, peers, simulate
from tests.test_benchmark import StandIn


def _naive_step(peer=None):
    """A tiny naive DenseNet-BC-16 training step, as the benchmark builds it for `peer`."""
    import models
    from models.compat import tf
    graph = tf.Graph()
    with graph.as_default():
        images = tf.random_uniform([2, 8, 8, 3])
        logits = models.densenet_bc(images, 10, depth=16, growth_rate=4)()
        loss = tf.losses.sparse_softmax_cross_entropy(tf.zeros([2], tf.int32), logits)
        optimizer = tf.train.GradientDescentOptimizer(0.1)
        train = peer.minimize(optimizer, loss) if peer else optimizer.minimize(loss)
    return graph, train


def test_the_table_gives_every_column_a_ratio_to_naive_and_says_why_one_is_empty(capsys):
    run = StandIn()
    rows = peers.main(['--configs', '40:12:64', '250:24:16',
                       '--peers', 'grappler-manual', 'openai-collection'], run=run)
    printed = capsys.readouterr().out
    asked = {case.setting for case in run.cases}
    assert asked == {'naive', 'grappler-manual', 'efficient', 'shared'}, asked
    assert all(case.steps == 1 for case in run.cases)
    header = [line for line in printed.splitlines() if line.startswith('| L, k, batch')][0]
    columns = list(peer_methods.COLUMNS)
    assert header.split(' | ')[2:] == columns[:-1] + [columns[-1] + ' |']
    # stand-in peaks: naive L^2/10, efficient 2L, shared L, a peer 5L (times b/64, k/12)
    row = [line for line in printed.splitlines() if line.startswith('| 40, 12, 64 |')][0]
    cells = dict(zip(['config', 'measure'] + columns, row.rstrip(' |').split(' | ')))
    assert cells['naive'] == '160.0' and cells['grappler-manual'] == '200.0 (1.25x)'
    assert cells['efficient'] == '80.0 (0.50x)' and cells['shared'] == '40.0 (0.25x)'
    assert cells['grappler-heuristics'] == cells['openai-speed'] == 'not asked for (--peers)'
    # no --openai: why, not blank
    assert cells['openai-collection'] == peer_methods.openai_missing('')
    assert re.search(r'\| 250, 24, 16 \| peak MiB \| 3,125\.0 \|', printed), printed
    assert {r['setting'] for r in rows} == set(peer_methods.COLUMNS)


def test_openai_is_looked_for_where_the_user_put_it(tmp_path):
    why = peer_methods.openai_missing(str(tmp_path))
    assert why.startswith('not '), why
    if 'graph_editor' in why:
        pytest.skip('openai gradient-checkpointing needs TF 1.15: ' + why)
    assert 'memory_saving_gradients.py' in why and str(tmp_path) in why
    (tmp_path / 'memory_saving_gradients.py').write_text('')
    why = peer_methods.openai_missing(str(tmp_path))
    assert 'pip install --target %s toposort' % tmp_path in why
    (tmp_path / 'toposort.py').write_text('')
    assert peer_methods.openai_missing(str(tmp_path)) == ''
    assert peer_methods.openai_missing('') == 'not installed (--openai DIR)'


def test_grappler_manual_hints_what_efficient_true_recomputes_and_runs():
    from models.compat import tf
    graph, train = _naive_step(peer_methods.PEERS['grappler-manual'])
    hinted = {op.type for op in graph.get_operations() if '_recompute_hint' in op.node_def.attr}
    norms = {kind for kind in hinted if kind.startswith('FusedBatchNorm')}
    assert len(norms) == 1 and hinted == {'ConcatV2', 'Relu'} | norms, hinted
    assert all(op.name.startswith('densenet/') for op in graph.get_operations()
               if '_recompute_hint' in op.node_def.attr)
    with graph.as_default(), tf.Session(
            config=peer_methods.PEERS['grappler-manual'].session_config()) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(train)
    unhinted, _ = _naive_step(peer_methods.PEERS['grappler-heuristics'])
    assert not [op for op in unhinted.get_operations() if '_recompute_hint' in op.node_def.attr]


def test_openai_collection_checkpoints_each_layers_new_features_and_each_transition():
    graph, _ = _naive_step()
    names = sorted(t.op.name for t in peer_methods.checkpoint_tensors(graph))
    # BC-16: 3 blocks of 2 bottleneck layers, 2 transitions
    assert len(names) == 8 and sum('transition' in n for n in names) == 2, names
    assert all(t.shape[-1] == 4 for t in peer_methods.checkpoint_tensors(graph)
               if 'denselayer' in t.op.name)  # k new channels each


def test_a_simulated_step_costs_more_in_the_modes_that_recompute():
    results = {}
    for mode in ('naive', 'efficient'):
        meta_graph, ops, build_s = simulate.step_graph(16, 4, mode, 8, 16)
        results[mode] = dict(simulate.simulate(meta_graph, simulate.GPUS['V100']), ops=ops)
        assert ops > 100 and build_s > 0
    naive, efficient = results['naive'], results['efficient']
    assert 0 < naive['time_ms'] < efficient['time_ms'], results
    assert 0 < naive['gbytes'] < efficient['gbytes'] and naive['ops'] < efficient['ops']
    a100 = simulate.simulate(simulate.step_graph(16, 4, 'naive', 8, 16)[0], simulate.GPUS['A100'])
    assert a100['time_ms'] < naive['time_ms']  # more SMs, more bandwidth
