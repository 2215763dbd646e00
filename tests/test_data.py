"""Train / validation / test splits: exact slices of synthetic raw arrays, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nncompress import data
from nncompress.config import SplitConfig
from nncompress.data import load_split, load_splits, make_splits, save_splits
from nncompress.data import split as split_module
from nncompress.errors import DataError

N_TRAIN, N_TEST = 100, 30


def raw_arrays():
    """Image i of each file is filled with i % 256 (test: 255 - i) and labelled i % 10."""
    train_ids = np.arange(N_TRAIN)
    test_ids = np.arange(N_TEST)
    return {
        "train_images": np.repeat((train_ids % 256).astype(np.uint8), 28 * 28).reshape(N_TRAIN, 28, 28),
        "train_labels": (train_ids % 10).astype(np.uint8),
        "test_images": np.repeat((255 - test_ids).astype(np.uint8), 28 * 28).reshape(N_TEST, 28, 28),
        "test_labels": ((test_ids + 3) % 10).astype(np.uint8),
    }


def ids(split):
    """The training-file index of each image (its fill value)."""
    return split["images"][:, 0, 0].tolist()


def params(**kwargs):
    values = {"train_size": 40, "val_size": 20, "offset": 10, "test_size": 15, "shuffle": False, "seed": 0}
    values.update(kwargs)
    return SplitConfig(**values)


def test_default_split_takes_consecutive_slices():
    splits = make_splits(raw_arrays(), params())
    assert set(splits) == {"train", "val", "test"}
    assert ids(splits["train"]) == list(range(10, 50))
    assert ids(splits["val"]) == list(range(50, 70))
    assert splits["train"]["labels"].tolist() == [i % 10 for i in range(10, 50)]
    assert splits["val"]["labels"].tolist() == [i % 10 for i in range(50, 70)]
    # whole images, not just their first pixel
    assert torch.equal(splits["train"]["images"][3], torch.full((28, 28), 13, dtype=torch.uint8))


def test_split_dtypes_and_shapes():
    splits = make_splits(raw_arrays(), params())
    for name, n in (("train", 40), ("val", 20), ("test", 15)):
        assert splits[name]["images"].dtype == torch.uint8
        assert splits[name]["images"].shape == (n, 28, 28)
        assert splits[name]["images"].is_contiguous()
        assert splits[name]["labels"].dtype == torch.int64
        assert splits[name]["labels"].shape == (n,)


def test_offset_zero_and_whole_file():
    splits = make_splits(raw_arrays(), params(offset=0, train_size=70, val_size=30))
    assert ids(splits["train"]) == list(range(70))
    assert ids(splits["val"]) == list(range(70, 100))


def test_test_split_is_the_first_test_images():
    splits = make_splits(raw_arrays(), params(test_size=7))
    assert ids(splits["test"]) == [255 - i for i in range(7)]
    assert splits["test"]["labels"].tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert len(make_splits(raw_arrays(), params(test_size=N_TEST))["test"]["labels"]) == N_TEST


def test_shuffled_split_is_the_seeded_permutation():
    splits = make_splits(raw_arrays(), params(shuffle=True, seed=3))
    order = np.random.default_rng(3).permutation(N_TRAIN)
    assert ids(splits["train"]) == order[10:50].tolist()
    assert ids(splits["val"]) == order[50:70].tolist()
    assert splits["train"]["labels"].tolist() == (order[10:50] % 10).tolist()


def test_shuffle_is_deterministic_differs_from_file_order_and_keeps_splits_disjoint():
    first = make_splits(raw_arrays(), params(shuffle=True, seed=3))
    again = make_splits(raw_arrays(), params(shuffle=True, seed=3))
    other_seed = make_splits(raw_arrays(), params(shuffle=True, seed=4))
    plain = make_splits(raw_arrays(), params())
    for name in ("train", "val", "test"):
        for key in ("images", "labels"):
            assert torch.equal(first[name][key], again[name][key])
    assert ids(first["train"]) != ids(plain["train"])
    assert ids(first["train"]) != ids(other_seed["train"])
    train, val = set(ids(first["train"])), set(ids(first["val"]))
    assert len(train) == 40
    assert len(val) == 20
    assert not train & val
    assert ids(first["test"]) == ids(plain["test"])  # the test file is never shuffled


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"offset": 50, "train_size": 40, "val_size": 20},
            "the training file has 100 images, the split needs 110",
        ),
        (
            {"offset": 0, "train_size": 100, "val_size": 1},
            "the training file has 100 images, the split needs 101",
        ),
        ({"test_size": 31}, "the test file has 30 images, split.test_size is 31"),
    ],
)
def test_impossible_sizes(kwargs, message):
    with pytest.raises(DataError) as info:
        make_splits(raw_arrays(), params(**kwargs))
    assert str(info.value) == message


def test_save_and_load_round_trip(tmp_path):
    splits = make_splits(raw_arrays(), params())
    out = tmp_path / "split"
    save_splits(splits, out)
    assert sorted(p.name for p in out.iterdir()) == ["test.pt", "train.pt", "val.pt"]
    for name, n in (("train", 40), ("val", 20), ("test", 15)):
        images, labels = load_split(out, name)
        assert images.dtype == torch.float32
        assert images.shape == (n, 784)
        assert labels.dtype == torch.int64
        assert torch.equal(labels, splits[name]["labels"])
        assert float(images.min()) >= 0.0
        assert float(images.max()) <= 1.0
        expected = splits[name]["images"].reshape(n, 784).float() / 255.0
        assert torch.equal(images, expected)
    images, _ = load_split(out, "train")
    assert torch.equal(images[0], torch.full((784,), 10 / 255.0))


def test_load_splits_returns_train_val_test_in_that_order(tmp_path):
    splits = make_splits(raw_arrays(), params())
    save_splits(splits, tmp_path)
    loaded = load_splits(tmp_path)
    assert [len(labels) for _, labels in loaded] == [40, 20, 15]
    for (_, labels), name in zip(loaded, ("train", "val", "test"), strict=True):
        assert torch.equal(labels, splits[name]["labels"])


def test_data_package_re_exports_the_split_module():
    for name in ("Split", "load_split", "load_splits", "make_splits", "save_splits"):
        assert getattr(data, name) is getattr(split_module, name)


def test_load_split_full_range_scaling(tmp_path):
    raw = raw_arrays()
    raw["train_images"][0] = 255
    raw["train_images"][1] = 0
    save_splits(make_splits(raw, params(offset=0)), tmp_path)
    images, _ = load_split(tmp_path, "train")
    assert float(images[0].min()) == 1.0
    assert float(images[1].max()) == 0.0


def test_load_split_missing_file(tmp_path):
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "val")
    assert str(info.value) == f"{tmp_path / 'val.pt'}: missing (run the split stage first: dvc repro split)"


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a torch file", b"PK\x03\x04garbage"],
)
def test_load_split_garbage_file(tmp_path, content):
    path = tmp_path / "train.pt"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "train")
    message = str(info.value)
    assert message.startswith(f"{path}: not a readable split file (")
    assert "\n" not in message


def test_load_split_truncated_file(tmp_path):
    save_splits(make_splits(raw_arrays(), params()), tmp_path)
    path = tmp_path / "train.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train\.pt: not a readable split file"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize(
    "content",
    [
        {"pictures": torch.zeros(2, 28, 28, dtype=torch.uint8), "labels": torch.zeros(2)},
        [torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2)],
    ],
)
def test_load_split_wrong_structure(tmp_path, content):
    torch.save(content, tmp_path / "val.pt")
    with pytest.raises(DataError, match=r"val\.pt: not a readable split file"):
        load_split(tmp_path, "val")


@pytest.mark.parametrize(
    "content",
    [
        {"images": torch.zeros(2, 28, 28), "labels": torch.zeros(2, dtype=torch.int64)},  # float images
        {"images": torch.zeros(2, 784, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.int64)},
        {"images": torch.zeros(3, 28, 28, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.int64)},
    ],
)
def test_load_split_wrong_tensors(tmp_path, content):
    path = tmp_path / "val.pt"
    torch.save(content, path)
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "val")
    assert str(info.value) == f"{path}: expected uint8 images (N, 28, 28) and N labels"


def test_load_split_wrong_image_size(tmp_path):
    torch.save(
        {"images": torch.zeros(2, 10, 10, dtype=torch.uint8), "labels": torch.zeros(2, dtype=torch.int64)},
        tmp_path / "val.pt",
    )
    with pytest.raises(DataError, match=r"expected uint8 images \(N, 28, 28\)"):
        load_split(tmp_path, "val")


def test_load_split_images_not_a_tensor(tmp_path):
    torch.save({"images": [0, 1], "labels": torch.zeros(2, dtype=torch.int64)}, tmp_path / "val.pt")
    with pytest.raises(DataError, match=r"val\.pt"):
        load_split(tmp_path, "val")


def test_load_split_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "unpickled"

    torch.save({"images": Exploit(marker), "labels": torch.zeros(1)}, tmp_path / "test.pt")
    with pytest.raises(DataError, match=r"test\.pt: not a readable split file"):
        load_split(tmp_path, "test")
    assert not marker.exists()


class Exploit:
    """Unpickling this creates a file: proof that arbitrary code would have run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
