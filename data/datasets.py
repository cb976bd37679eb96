"""Base labelled datasets for the `projected` family: offline copies, HuggingFace, or a user file.

`load_base(base, split)` returns flattened float32 inputs and int32 labels. Lookup order for a
named dataset: `$METALEARN_DATA_DIR/<name>/*<split>*.npz` (the layout of the shared offline copies),
then `$METALEARN_DATA_DIR/<hub id>/` laid out as the hub's repository (read with the HF offline
flags set, so nothing is fetched), then the HuggingFace hub itself.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from pathlib import Path

import numpy as np

from metalearn.core.errors import UserError
from metalearn.data.validation import checked_arrays

DATA_DIR_ENV = "METALEARN_DATA_DIR"
# name -> (hub repository, config name or None)
HUB = {
    "mnist": ("ylecun/mnist", None),
    "fashion_mnist": ("zalando-datasets/fashion_mnist", None),
    "kmnist": ("tanganke/kmnist", None),
    "cifar10": ("uoft-cs/cifar10", None),
    "svhn": ("ufldl-stanford/svhn", "cropped_digits"),
}
NAMES = ("digits", *HUB)
SPLITS = ("train", "test")


def load_base(base: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Inputs `x [n, D]` (float32, unnormalized) and labels `y [n]` (int32) of a base dataset."""
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    x, y = _load_cached(base, split)
    return x, y


@functools.lru_cache(maxsize=8)
def load_normalized(
    base: str, split: str = "train", size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`load_base` with inputs z-normalized: per-feature mean removed, then one global scale
    (so constant pixels stay finite and images keep their relative contrast). With `size`,
    images are first made grayscale and resized to size x size (GPICL brings every dataset
    to one input size this way, so one projection shape serves them all)."""
    x, y = load_base(base, split)
    if size is not None:
        x = resized_gray(base, x, size)
    x = x - x.mean(0, keepdims=True)
    scale = float(np.sqrt((x**2).mean()))
    if not np.isfinite(scale):
        raise UserError(
            f"base {base!r}: field x is too large to normalize in float32 (its root mean "
            "square overflows); rescale the inputs"
        )
    return x / max(scale, 1e-8), y


def resized_gray(base: str, x: np.ndarray, size: int) -> np.ndarray:
    """Flattened square images [n, D] -> grayscale (the channels' mean) resized to
    [n, size * size] (bilinear, antialiased when shrinking)."""
    import jax
    import jax.numpy as jnp

    shape = image_shape(x.shape[1])
    if shape is None:
        raise UserError(
            f"base {base!r} has inputs of size {x.shape[1]}, not square images with 1 or 3 "
            "channels, so they cannot be resized (leave size unset)"
        )
    gray = x.reshape(len(x), *shape).mean(-1)
    out = jax.image.resize(jnp.asarray(gray), (len(x), size, size), "linear", antialias=True)
    return np.asarray(out, np.float32).reshape(len(x), size * size)


def check_classes(base: str, y: np.ndarray, num_classes: int) -> None:
    """Labels permuted among `num_classes` must cover every label of the base."""
    base_classes = int(y.max()) + 1
    if base_classes > num_classes:
        raise UserError(
            f"base {base!r} has {base_classes} classes but num_classes={num_classes}; "
            f"num_classes must be at least {base_classes}"
        )


def image_shape(size: int) -> tuple[int, int, int] | None:
    """(side, side, channels) of a flattened square image of `size` values, channels last, for
    one or three channels; None when `size` is neither."""
    for channels in (1, 3):
        side = math.isqrt(size // channels)
        if side * side * channels == size:
            return side, side, channels
    return None


@functools.lru_cache(maxsize=8)
def _load_cached(base: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if base == "digits":
        x, y = _digits(split)
    elif base in HUB:
        x, y = _named(base, split)
    elif base.endswith(".npz"):
        x, y = _npz(Path(base))
    elif base.endswith(".parquet"):
        x, y = _from_hf(_load_hf("parquet", None, split="train", data_files=base), base)
    else:
        raise UserError(
            f"unknown base {base!r}; use one of {', '.join(NAMES)}, "
            "a path to a .npz with arrays x and y, or a .parquet file"
        )
    return checked_arrays(base, x, y)


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    test = np.arange(len(d.target)) % 5 == 0  # a fixed 80/20 split, the same everywhere
    keep = test if split == "test" else ~test
    return d.data[keep], d.target[keep]


def _npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"base file {str(path)!r} does not exist")
    try:
        with np.load(path) as f:
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise UserError(
                    f"base file {str(path)!r} lacks array(s) {', '.join(missing)}; "
                    f"it has {', '.join(f.files) or 'none'} (need x and y)"
                )
            return f["x"], f["y"]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read base file {str(path)!r}: {e}") from None


def _data_dir() -> Path | None:
    d = os.environ.get(DATA_DIR_ENV)
    if not d:
        return None
    if not Path(d).is_dir():
        raise UserError(
            f"{DATA_DIR_ENV}={d!r} is not a folder; point it at the data folder or unset it"
        )
    return Path(d)


def _named(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    repo, config = HUB[name]
    root = _data_dir()
    if root is not None:
        found = sorted(glob.glob(str(root / name / f"*{split}*.npz")))
        if found:
            return _npz(Path(found[0]))
        if (root / repo).is_dir():
            return _from_hf(_load_hf(str(root / repo), config, split=split, offline=True), name)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "HF_DATASETS_OFFLINE", "0"
    ) not in ("0", "", "false")
    how = (
        f"set {DATA_DIR_ENV} to a folder holding {name}/<file with '{split}' in its name>.npz "
        f"(arrays x and y) or a copy of the hub repository {repo}/, or go online so "
        f"HuggingFace datasets can fetch {repo}"
    )
    if offline or not _hub_reachable():
        raise UserError(f"base {name!r} ({split}) is not available offline: {how}")
    try:
        ds = _load_hf(repo, config, split=split)
    except Exception as e:
        raise UserError(
            f"could not load base {name!r} ({split}) from the hub ({e}); {how}"
        ) from None
    return _from_hf(ds, name)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the HuggingFace hub answers at all: a quick connect, instead of letting
    `datasets` spend ~20 s on retries when this machine is offline."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_hf(path: str, config: str | None, *, split: str, offline: bool = False, **kwargs):
    if offline:  # a local copy: never let datasets spend time on hub retries
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    if offline:
        datasets.config.HF_HUB_OFFLINE = True
        datasets.config.HF_DATASETS_OFFLINE = True
    try:
        return datasets.load_dataset(path, config, split=split, **kwargs)
    except ValueError as e:
        raise UserError(f"cannot read split {split!r} of {path!r}: {e}") from None


def _from_hf(ds, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a HuggingFace image-classification dataset as arrays."""
    import datasets

    image_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None)
    label_col = next(
        (c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)),
        "label" if "label" in ds.features else None,
    )
    if image_col is None or label_col is None:
        raise UserError(
            f"base {name!r} needs an image column and a label column; it has "
            f"{', '.join(ds.features)}"
        )
    ds = ds.with_format("numpy")
    images = [np.asarray(im) for im in ds[image_col]]
    shapes = sorted({im.shape for im in images})
    if len(shapes) > 1:
        raise UserError(
            f"base {name!r}: column {image_col} holds images of {len(shapes)} shapes "
            f"({', '.join(map(str, shapes[:3]))}...); all images must have one shape"
        )
    x = np.stack(images) if images else np.zeros((0, 0), np.float32)
    return x, np.asarray(ds[label_col])
