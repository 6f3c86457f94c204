import numpy as np
import pytest
import torch

from reportgen.datasets import load_dataset, select_samples
from reportgen.datasets.digits import DigitsDataset
from reportgen.embed.extractor import extract_shard
from reportgen.embed.layers import list_layers, resolve_layers
from reportgen.errors import ModelError
from reportgen.spec import LayerSpec


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DigitsDataset(kind="digits"))


def _layers(module, *names):
    return resolve_layers(module, [LayerSpec(name=n) if not isinstance(n, LayerSpec) else n for n in names])


def test_k_layers_cost_one_forward_pass_per_batch(effnet, digits):
    calls = []
    h = effnet.module.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        layers = _layers(effnet.module, "blocks.1", "blocks.2", "blocks.4", "global_pool")
        shard = extract_shard(effnet, digits, np.arange(250), layers, batch_size=100)
    finally:
        h.remove()
    assert len(calls) == 3 == shard.forward_calls  # ceil(250 / 100), whatever the number of layers
    assert {k: v.shape for k, v in shard.embeddings.items()} == {
        "blocks.1": (250, 24),
        "blocks.2": (250, 40),
        "blocks.4": (250, 112),
        "global_pool": (250, 1280),
    }
    assert shard.thumbnails.shape == (250, 32, 32, 3)
    # hooks removed, eval state restored
    assert all(not m._forward_hooks for m in effnet.module.modules())


def test_hooked_embedding_equals_running_modules_by_hand(effnet, digits):
    layers = _layers(effnet.module, "blocks.2", LayerSpec(name="global_pool", reshape="mean"))
    shard = extract_shard(effnet, digits, np.arange(8), layers, batch_size=8)
    from reportgen.images import preprocess_image

    x = torch.from_numpy(np.stack([preprocess_image(digits.read(i), effnet.preprocess) for i in range(8)]))
    m = effnet.module
    with torch.inference_mode():
        h = m.bn1(m.conv_stem(x))
        for i in range(3):
            h = m.blocks[i](h)
        b2 = h.mean(dim=(2, 3))
        for i in range(3, len(m.blocks)):
            h = m.blocks[i](h)
        gp = m.bn2(m.conv_head(h)).mean(dim=(2, 3))
    np.testing.assert_allclose(shard.embeddings["blocks.2"], b2.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(shard.embeddings["global_pool"], gp.numpy(), rtol=1e-4, atol=1e-5)


def test_global_pool_embeddings_separate_digits(effnet, digits):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    sel = select_samples(digits, limit=500, method="stratified", seed=0)
    shard = extract_shard(effnet, digits, sel.indices, _layers(effnet.module, "global_pool"), batch_size=125)
    x, y = shard.embeddings["global_pool"], digits.labels[shard.indices]
    acc = cross_val_score(KNeighborsClassifier(5), x, y, cv=5).mean()
    assert acc > 0.85, acc


def test_reshape_strategies_and_limits(effnet, digits):
    idx = np.arange(4)
    layers = [LayerSpec(name="blocks.2", reshape=r) for r in ("avg_pool_2",)]
    s = extract_shard(effnet, digits, idx, resolve_layers(effnet.module, layers))
    assert s.embeddings["blocks.2"].shape == (4, 40 * 4)
    with pytest.raises(ModelError, match=r"over the 16,384 limit; use reshape: mean"):
        extract_shard(
            effnet, digits, idx, resolve_layers(effnet.module, [LayerSpec(name="blocks.0", reshape="flatten")])
        )
    with pytest.raises(ModelError, match="needs a \\(batch, tokens, dim\\) output"):
        extract_shard(effnet, digits, idx, resolve_layers(effnet.module, [LayerSpec(name="blocks.2", reshape="cls")]))


def test_unknown_layer_did_you_mean_and_index(effnet):
    with pytest.raises(ModelError, match=r"no layer named 'block.2'; did you mean 'blocks.2'"):
        _layers(effnet.module, "block.2")
    with pytest.raises(ModelError, match="index 9999 is out of range"):
        _layers(effnet.module, LayerSpec(name=9999))
    assert _layers(effnet.module, LayerSpec(name=52))[0].name == "blocks.2"


class TupleNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.unused = torch.nn.Linear(2, 2)
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        h = self.conv(x).mean((2, 3))[:, None, :]
        out, _ = self.lstm(h)
        return out[:, 0]


def test_tuple_layer_and_uncalled_layer_fail_clearly(digits):
    from reportgen.models import load_model
    from reportgen.spec import ModelSpec

    m = load_model(ModelSpec(name="t", factory="tests.test_extract:TupleNet", input_size=16, layers=["conv"]))
    with pytest.raises(ModelError, match="returns a tuple, not a tensor"):
        extract_shard(m, digits, np.arange(3), resolve_layers(m.module, [LayerSpec(name="lstm")]))
    with pytest.raises(ModelError, match="was not called during the forward pass"):
        extract_shard(m, digits, np.arange(3), resolve_layers(m.module, [LayerSpec(name="unused")]))
    assert all(not mod._forward_hooks for mod in m.module.modules())


def test_list_layers_numbers_like_named_modules(effnet):
    rows = list_layers(effnet, input_size=64)
    names = [n for n, _ in effnet.module.named_modules()]
    assert [r.index for r in rows] == list(range(len(names)))
    gp = next(r for r in rows if r.name == "global_pool")
    assert gp.output_shape == "(1, 1280)" and gp.type == "SelectAdaptivePool2d"


def test_frozen_graph_gives_the_eager_embeddings(effnet, digits):
    layers = _layers(effnet.module, "blocks.2", LayerSpec(name="blocks.4", reshape="avg_pool_2"), "global_pool")
    idx = np.arange(150)
    eager = extract_shard(effnet, digits, idx, layers, batch_size=64, jit=False)
    frozen = extract_shard(effnet, digits, idx, layers, batch_size=64, jit=True)
    assert frozen.forward_calls == eager.forward_calls == 3
    for name in eager.embeddings:
        e, f = eager.embeddings[name], frozen.embeddings[name]
        assert e.shape == f.shape
        np.testing.assert_allclose(f, e, rtol=1e-3, atol=1e-4 * float(np.abs(e).max()))
    assert all(not m._forward_hooks for m in effnet.module.modules())


def test_frozen_graph_on_a_factory_model(digits):
    from reportgen.models import load_model
    from reportgen.spec import ModelSpec

    m = load_model(ModelSpec(name="t", factory="tests.netzoo:Small", input_size=16, layers=["conv"]))
    shard = extract_shard(
        m, digits, np.arange(40), resolve_layers(m.module, [LayerSpec(name="pool")]), batch_size=16, jit=True
    )
    assert shard.embeddings["pool"].shape == (40, 8)
