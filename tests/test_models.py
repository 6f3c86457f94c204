import pickle
import time

import pytest
import torch

from reportgen.errors import ModelError
from reportgen.images import preprocess_image
from reportgen.models import load_model, read_checkpoint
from reportgen.spec import ModelSpec


def test_packaged_effnet_classifies_the_cat_photo_as_a_cat():
    from skimage import data

    m = load_model(
        ModelSpec(name="e", timm="tf_efficientnet_lite0", weights="efficientnet_lite0", layers=["global_pool"])
    )
    x = torch.from_numpy(preprocess_image(data.chelsea(), m.preprocess))[None]
    with torch.inference_mode():
        top = m.module(x).softmax(-1)[0].topk(3).indices.tolist()
    assert top[0] in range(281, 286), top  # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert m.preprocess.input_size == 224 and m.preprocess.mean == (0.5, 0.5, 0.5)


def _tiny_spec(**kw):
    return ModelSpec(name="t", timm="resnet18", layers=["layer1"], num_classes=3, **kw)


def test_checkpoint_state_dict_with_wrappers_and_prefix(tmp_path):
    src = load_model(_tiny_spec(), seed=1)
    state = {"state_dict": {f"module.{k}": v for k, v in src.module.state_dict().items()}, "epoch": 3}
    torch.save(state, tmp_path / "ck.pth")
    loaded = load_model(_tiny_spec(checkpoint=tmp_path / "ck.pth"), seed=2)
    assert loaded.info.weights_sha256 == src.info.weights_sha256
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(tmp_path / "ck.safetensors"))
    assert load_model(_tiny_spec(checkpoint=tmp_path / "ck.safetensors")).info.weights_sha256 == src.info.weights_sha256


def test_checkpoint_for_other_architecture_names_keys(tmp_path):
    other = torch.nn.Sequential(torch.nn.Linear(3, 4))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(
        ModelError,
        match=r"does not fit the architecture: \d+ missing \(first: conv1.weight.*"
        r"2 unexpected \(first: 0.weight, 0.bias",
    ):
        load_model(_tiny_spec(checkpoint=tmp_path / "other.pt"))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_checkpoint_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"weight": Evil()}, f)
    with pytest.raises(ModelError, match="unsafe unpickling"):
        read_checkpoint(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out


def test_truncated_checkpoint(tmp_path):
    src = load_model(_tiny_spec())
    torch.save(src.module.state_dict(), tmp_path / "ok.pt")
    raw = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelError, match="damaged or truncated|not a valid checkpoint"):
        read_checkpoint(tmp_path / "cut.pt")


def test_unknown_timm_model_suggests():
    with pytest.raises(ModelError, match=r"unknown model 'tf_efficientnet_lite9'; did you mean .*tf_efficientnet_lite"):
        load_model(ModelSpec(name="x", timm="tf_efficientnet_lite9", layers=[1]))


def test_pretrained_offline_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="pretrained"):
        load_model(ModelSpec(name="x", timm="resnet18", pretrained=True, layers=[1]))
    assert time.perf_counter() - t0 < 20


def test_factory_models(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def small(**kw):\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), "
        "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
        "def not_a_module(**kw):\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    m = load_model(ModelSpec(name="f", factory="mymodels:small", layers=["1"]))
    assert m.preprocess.input_size == 224 and m.info.arch == "mymodels:small"
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        load_model(ModelSpec(name="f", factory="mymodels:not_a_module", layers=["1"]))
    with pytest.raises(ModelError, match="cannot import module"):
        load_model(ModelSpec(name="f", factory="nosuchmodule:f", layers=["1"]))
