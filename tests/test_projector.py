"""TensorBoard projector interop and precomputed embeddings as input."""

import json

import numpy as np
import pytest

from reportgen.datasets import load_dataset
from reportgen.datasets.embeddings import EmbeddingsDataset, ProjectorDataset
from tests.conftest import run, small_spec, write


def test_export_then_import_round_trips_exactly(tmp_path):
    spec = small_spec(tmp_path)
    spec["dataset"]["limit"] = 60
    p = write(tmp_path, spec)
    for binary in (False, True):
        out = tmp_path / ("proj-bin" if binary else "proj")
        code, stdout, err = run("export-projector", str(p), "--out", str(out), *(["--binary"] if binary else []), "-q")
        assert code == 0, err
        assert (out / "projector_config.pbtxt").exists() and (out / "sprite.png").exists()
        ds = load_dataset(ProjectorDataset(kind="tensorboard_projector", path=out))
        from reportgen.pipeline import extract_embeddings
        from tests.conftest import make_spec

        _, _, runs = extract_embeddings(make_spec(spec), progress=False)
        for name, x in runs[0].embeddings.layers.items():
            np.testing.assert_array_equal(ds.vectors[f"small/{name}"], np.asarray(x))  # exact, TSV or bytes
        assert [ds.class_names[y] for y in ds.labels] == [str(int(v)) for v in runs[0].embeddings.labels]
        assert ds.metadata["id"] == list(runs[0].embeddings.ids)
        assert ds.read(0).shape == (32, 32, 3)  # the sprite cut back into thumbnails


def test_sprite_stays_within_tensorboard_limit():
    from reportgen.projector import sprite_layout

    side, tile = sprite_layout(70_000, 32)
    assert side * tile <= 8192 and tile == 30
    assert sprite_layout(100, 32) == (10, 32)


def test_metadata_rules(tmp_path):
    from reportgen.projector import read_metadata, write_metadata

    write_metadata(tmp_path / "one.tsv", {"label": ["a", "b"]})
    assert (tmp_path / "one.tsv").read_text() == "a\nb\n"  # one column: no header
    write_metadata(tmp_path / "two.tsv", {"label": ["a", "b\tc"], "id": ["1", "2"]})
    assert (tmp_path / "two.tsv").read_text().splitlines()[0] == "label\tid"
    assert read_metadata(tmp_path / "two.tsv", 2) == {"label": ["a", "b c"], "id": ["1", "2"]}


def test_tensorboard_add_embedding_log_builds_a_report(tmp_path):
    torch = pytest.importorskip("torch")
    tb = pytest.importorskip("torch.utils.tensorboard")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.data[:120].astype(np.float32))
    imgs = torch.from_numpy(np.repeat(d.images[:120, None] / 16.0, 3, axis=1).astype(np.float32))
    w = tb.SummaryWriter(str(tmp_path / "log"))
    w.add_embedding(x, metadata=[str(v) for v in d.target[:120]], label_img=imgs)
    w.close()
    spec = {
        "title": "from tensorboard",
        "dataset": {"kind": "tensorboard_projector", "path": str(tmp_path / "log")},
        "reducers": ["pca", {"tsne": {"perplexity": 10, "n_iter": 250}}],
        "report": {"gallery_components": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    layer = s["models"][0]["layers"][0]
    assert s["models"][0]["arch"] == "precomputed" and layer["dim"] == 64 and layer["samples"] == 120
    assert layer["metrics"]["knn_accuracy"] > 0.8  # raw digit pixels separate well
    from sklearn.decomposition import PCA

    ref = PCA(10).fit(d.data[:120]).explained_variance_ratio_
    np.testing.assert_allclose(layer["pca"]["explained_variance_ratio"], ref, rtol=1e-4)


def test_embeddings_kind_without_images(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(["<cat>", "dog"], 30)
    x = rng.normal(size=(60, 16)).astype(np.float32)
    x[:30] += 5
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "m.tsv").write_text("label\tword\n" + "".join(f"{l}\tw{i}\n" for i, l in enumerate(labels)))
    ds = load_dataset(EmbeddingsDataset(kind="embeddings", vectors=tmp_path / "v.npy", metadata=tmp_path / "m.tsv"))
    assert ds.class_names == ("<cat>", "dog") and not ds.has_images and ds.metadata["word"][0] == "w0"
    spec = {
        "dataset": {"kind": "embeddings", "vectors": "v.npy", "metadata": "m.tsv"},
        "reducers": ["pca"],
        "output": {"dir": "out"},
    }
    code, out, err = run("build", str(write(tmp_path, spec)), "-q")
    assert code == 0, err
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["models"][0]["layers"][0]["metrics"]["knn_accuracy"] > 0.9
    code, _, err = run("layers", str(tmp_path / "spec.yaml"))
    assert code == 2 and "no models" in err
    assert "&lt;cat&gt;" in (tmp_path / "out" / "report.html").read_text()
    code, _, err = run(
        "build", str(write(tmp_path, {**spec, "models": [{"name": "m", "timm": "resnet18", "layers": [1]}]})), "-q"
    )
    assert code == 2 and "holds embeddings already" in err
