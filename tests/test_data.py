import gzip
from pathlib import Path

import numpy as np
import pytest

from reportgen.datasets import load_dataset, select_samples
from reportgen.datasets.csv_manifest import CsvDataset
from reportgen.datasets.digits import DigitsDataset
from reportgen.datasets.idx import IdxDataset, parse_idx
from reportgen.datasets.image_folder import ImageFolderDataset
from reportgen.datasets.npz import NpzDataset
from reportgen.errors import DataError
from reportgen.images import BadImage, read_image_file

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_digits_rgb_uint8_and_stable_ids():
    ds = load_dataset(DigitsDataset(kind="digits"))
    assert len(ds) == 1797 and ds.class_names == tuple(str(i) for i in range(10))
    img = ds.read(0)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8 and img.max() > 200
    assert ds.ids[5] == "digits-5" and load_dataset(DigitsDataset(kind="digits")).fingerprint == ds.fingerprint


def test_image_folder_normalises_every_mode(image_folder):
    ds = load_dataset(ImageFolderDataset(kind="image_folder", path=image_folder))
    assert ds.class_names == ("cats", "rocks")
    assert len(ds) == 9
    for i in range(len(ds)):
        img = ds.read(i)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, ds.ids[i]
    sixteen = ds.read(ds.ids.index("rocks/sixteen.png"))
    assert 20 < sixteen.mean() < 235  # 16-bit scaled, not clipped to white


def test_corrupt_and_zero_byte_images_are_bad(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 20)
    for name in ("empty.png", "trunc.jpg", "missing.png"):
        with pytest.raises(BadImage):
            read_image_file(tmp_path / name)


def test_empty_class_folder_and_one_class(tmp_path, image_folder):
    (image_folder / "empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*empty has no images"):
        load_dataset(ImageFolderDataset(kind="image_folder", path=image_folder))
    one = tmp_path / "one"
    (one / "a").mkdir(parents=True)
    (image_folder / "cats" / "rgb.jpg").rename(one / "a" / "x.jpg")
    with pytest.raises(DataError, match="only one class"):
        load_dataset(ImageFolderDataset(kind="image_folder", path=one))
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(ImageFolderDataset(kind="image_folder", path=tmp_path / "nope"))


def test_csv_manifest_keeps_metadata_and_refuses_escaping_paths(tmp_path, image_folder):
    m = image_folder / "manifest.csv"
    m.write_text("file,kind,photographer\ncats/rgb.jpg,cat,Ann\nrocks/a.jpg,rock,<b>Bob</b>\n")
    ds = load_dataset(CsvDataset(kind="csv", path=m, path_column="file", label_column="kind"))
    assert ds.class_names == ("cat", "rock") and ds.metadata["photographer"] == ["Ann", "<b>Bob</b>"]
    assert ds.read(1).shape[2] == 3
    with pytest.raises(DataError, match=r"column 'path' not in"):
        load_dataset(CsvDataset(kind="csv", path=m))
    m.write_text("path,label\n../../etc/passwd,x\ncats/rgb.jpg,y\n")
    with pytest.raises(DataError, match="outside"):
        load_dataset(CsvDataset(kind="csv", path=m))


def _idx(arr: np.ndarray) -> bytes:
    return (
        bytes([0, 0, 8, arr.ndim])
        + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        + arr.astype(np.uint8).tobytes()
    )


def test_idx_plain_and_gzip_and_bad_magic(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (20, 7, 7), dtype=np.uint8)
    labels = np.arange(20) % 3
    (tmp_path / "i.idx").write_bytes(_idx(imgs))
    (tmp_path / "l.idx.gz").write_bytes(gzip.compress(_idx(labels)))
    ds = load_dataset(
        IdxDataset(kind="idx", images=tmp_path / "i.idx", labels=tmp_path / "l.idx.gz", class_names=["a", "b", "c"])
    )
    assert len(ds) == 20 and np.array_equal(ds.read(3)[:, :, 0], imgs[3])
    with pytest.raises(DataError, match="bad magic number"):
        parse_idx(b"\x12\x34\x56\x78rest", source="x")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(_idx(imgs)[:-5], source="x")
    with pytest.raises(DataError, match="out of range"):
        load_dataset(
            IdxDataset(kind="idx", images=tmp_path / "i.idx", labels=tmp_path / "l.idx.gz", class_names=["a", "b"])
        )


def test_idx_file_lists_concatenate_in_order(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (6, 5, 5), dtype=np.uint8), rng.integers(0, 255, (4, 5, 5), dtype=np.uint8)
    for name, arr in (
        ("a-img.idx", a),
        ("a-lab.idx", np.arange(6) % 2),
        ("b-img.idx", b),
        ("b-lab.idx", np.arange(4) % 2),
        ("c-img.idx", a[:, :4]),
    ):
        (tmp_path / name).write_bytes(_idx(arr))
    ds = load_dataset(
        IdxDataset(
            kind="idx",
            images=[tmp_path / "a-img.idx", tmp_path / "b-img.idx"],
            labels=[tmp_path / "a-lab.idx", tmp_path / "b-lab.idx"],
        )
    )
    assert len(ds) == 10 and np.array_equal(ds.read(7)[:, :, 0], b[1])
    assert ds.ids[0] == "a-img-0" and ds.ids[6] == "b-img-0" and len(set(ds.ids)) == 10
    with pytest.raises(DataError, match="one labels file per images file"):
        load_dataset(
            IdxDataset(
                kind="idx", images=[tmp_path / "a-img.idx", tmp_path / "b-img.idx"], labels=[tmp_path / "a-lab.idx"]
            )
        )
    with pytest.raises(DataError, match=r"images\[1\].*files must match"):
        load_dataset(
            IdxDataset(
                kind="idx",
                images=[tmp_path / "a-img.idx", tmp_path / "c-img.idx"],
                labels=[tmp_path / "a-lab.idx", tmp_path / "a-lab.idx"],
            )
        )
    with pytest.raises(DataError, match="6 images but .* 4 labels"):
        load_dataset(IdxDataset(kind="idx", images=[tmp_path / "a-img.idx"], labels=[tmp_path / "b-lab.idx"]))


@pytest.mark.skipif(not FASHION.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    ds = load_dataset(
        IdxDataset(
            kind="idx", images=FASHION / "t10k-images-idx3-ubyte.gz", labels=FASHION / "t10k-labels-idx1-ubyte.gz"
        )
    )
    assert len(ds) == 10_000 and len(ds.class_names) == 10 and ds.read(0).shape == (28, 28, 3)
    assert np.all(ds.counts == 1000)
    full = load_dataset(
        IdxDataset(
            kind="idx",
            images=[FASHION / "train-images-idx3-ubyte.gz", FASHION / "t10k-images-idx3-ubyte.gz"],
            labels=[FASHION / "train-labels-idx1-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"],
        )
    )
    assert len(full) == 70_000 and np.all(full.counts == 7000) and np.array_equal(full.read(60_000), ds.read(0))


def test_npz_mismatch_and_ok(tmp_path):
    np.savez(tmp_path / "ok.npz", images=np.zeros((6, 5, 5, 3), np.float32) + 0.5, labels=np.array([0, 1, 0, 1, 0, 1]))
    ds = load_dataset(NpzDataset(kind="npz", path=tmp_path / "ok.npz"))
    assert ds.read(0).dtype == np.uint8 and 120 <= ds.read(0).mean() <= 130
    np.savez(tmp_path / "bad.npz", images=np.zeros((6, 5, 5)), labels=np.zeros(4))
    with pytest.raises(DataError, match="6 images but 4 labels"):
        load_dataset(NpzDataset(kind="npz", path=tmp_path / "bad.npz"))


def test_stratified_selection_is_proportional_and_seeded():
    ds = load_dataset(DigitsDataset(kind="digits"))
    a = select_samples(ds, limit=100, method="stratified", seed=0)
    b = select_samples(ds, limit=100, method="stratified", seed=0)
    c = select_samples(ds, limit=100, method="stratified", seed=1)
    assert len(a.indices) == 100 and np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)
    assert all(9 <= v <= 11 for v in a.used_per_class.values())
    assert select_samples(ds, limit=10, method="first", seed=0).indices.tolist() == list(range(10))
    assert select_samples(ds, limit=None, method="stratified", seed=0).method == "all"
