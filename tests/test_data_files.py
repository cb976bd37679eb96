"""Base datasets from files: .npz, a .parquet file, and a folder laid out as the HF hub's."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn import data
from metalearn.core.errors import UserError
from metalearn.data.datasets import load_base


def _images(n: int, size: int = 6, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)  # test fixtures only
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.arange(n) % classes


def test_npz_base(tmp_path):
    x, y = _images(30)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    fam = data.from_spec(f"projected:base={tmp_path / 'mine.npz'},dim=4,num_classes=3")
    assert fam.base_size == (30, 36)
    assert fam.sample(__import__("jax").random.key(0), 2, 5).x.shape == (2, 5, 4)


def test_npz_without_arrays_and_unreadable_files(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 2)))
    with pytest.raises(UserError, match=r"lacks array\(s\) x, y.*images"):
        load_base(str(tmp_path / "bad.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="cannot read base file"):
        load_base(str(tmp_path / "junk.npz"))


def _hub_parquet(path, n=20):
    """Write a parquet file the way the hub's image datasets are stored."""
    import datasets
    from PIL import Image

    x, y = _images(n)
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(im) for im in x], "label": y.tolist()},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abc"))}
        ),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path))
    return x, y


def test_huggingface_path_on_a_local_hub_layout(tmp_path, monkeypatch):
    # ylecun/mnist keeps mnist/{train,test}-00000-of-00001.parquet
    x, y = _hub_parquet(tmp_path / "ylecun" / "mnist" / "mnist" / "train-00000-of-00001.parquet")
    _hub_parquet(tmp_path / "ylecun" / "mnist" / "mnist" / "test-00000-of-00001.parquet", n=10)
    monkeypatch.setenv("METALEARN_DATA_DIR", str(tmp_path))
    from metalearn.data.datasets import _load_cached

    _load_cached.cache_clear()
    got_x, got_y = load_base("mnist", "train")
    assert got_x.shape == (20, 36)
    assert np.array_equal(got_x, x.reshape(20, -1).astype(np.float32))
    assert np.array_equal(got_y, y)
    assert load_base("mnist", "test")[0].shape == (10, 36)
    _load_cached.cache_clear()


def test_parquet_file_base(tmp_path):
    x, y = _hub_parquet(tmp_path / "d.parquet")
    got_x, got_y = load_base(str(tmp_path / "d.parquet"))
    assert np.array_equal(got_x, x.reshape(len(x), -1)) and np.array_equal(got_y, y)


def test_offline_and_missing_names_both_ways(tmp_path, monkeypatch):
    monkeypatch.setenv("METALEARN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_base("kmnist", "train")
    msg = str(e.value)
    assert "METALEARN_DATA_DIR" in msg and "tanganke/kmnist" in msg and "online" in msg
