"""MNIST files: IDX parsing of synthetic gzipped files, verified download from folders and URLs."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from torchvision.datasets import MNIST

from nncompress.data import mnist
from nncompress.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PORT_URL = "http://127.0.0.1:9/"  # the discard port: nothing listens there


def idx_bytes(array, type_code=0x08, magic_prefix=b"\x00\x00", ndim=None):
    """The IDX encoding of `array`: 2 zero bytes, type code, ndim, big-endian dims, uint8 body."""
    array = np.asarray(array, dtype=np.uint8)
    ndim = array.ndim if ndim is None else ndim
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic_prefix + bytes([type_code, ndim]) + dims + array.tobytes()


def write_gz(path, payload):
    path.write_bytes(gzip.compress(payload))
    return path


def images(n, h=28, w=28):
    return (np.arange(n * h * w) % 251).astype(np.uint8).reshape(n, h, w)


# --- read_idx -----------------------------------------------------------------------------------


def test_idx_helper_matches_the_documented_magic_numbers():
    assert idx_bytes(np.zeros((2, 3, 4)))[:4] == (0x00000803).to_bytes(4, "big")
    assert idx_bytes(np.zeros(5))[:8] == (0x00000801).to_bytes(4, "big") + (5).to_bytes(4, "big")


def test_read_idx_images(tmp_path):
    expected = images(3, 5, 4)
    path = write_gz(tmp_path / "img.gz", idx_bytes(expected))
    got = mnist.read_idx(path, 3)
    assert got.dtype == np.uint8
    assert got.shape == (3, 5, 4)
    np.testing.assert_array_equal(got, expected)
    assert got.flags.writeable


def test_read_idx_labels(tmp_path):
    expected = np.array([7, 2, 1, 0, 4, 255], dtype=np.uint8)
    path = write_gz(tmp_path / "lab.gz", idx_bytes(expected))
    np.testing.assert_array_equal(mnist.read_idx(path, 1), expected)


def test_read_idx_large_dimension_is_big_endian(tmp_path):
    expected = (np.arange(300) % 256).astype(np.uint8)  # 300 = 0x0000012c: endianness matters
    path = write_gz(tmp_path / "lab.gz", idx_bytes(expected))
    np.testing.assert_array_equal(mnist.read_idx(path, 1), expected)


def read_error(path, ndim):
    with pytest.raises(DataError) as info:
        mnist.read_idx(path, ndim)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


def test_not_gzip(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(idx_bytes(images(1)))
    assert "not a readable gzip file" in read_error(path, 3)


def test_missing_file(tmp_path):
    assert "not a readable gzip file" in read_error(tmp_path / "absent.gz", 3)


def test_bad_magic(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(images(1), magic_prefix=b"\x01\x00"))
    assert read_error(path, 3) == f"{path}: not an IDX file (bad magic number)"


def test_too_short_for_magic(tmp_path):
    path = write_gz(tmp_path / "x.gz", b"\x00\x00")
    assert read_error(path, 1) == f"{path}: not an IDX file (bad magic number)"


def test_wrong_type_code(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(images(1), type_code=0x0D))
    assert read_error(path, 3) == f"{path}: IDX data type 0x0d, expected unsigned bytes (0x08)"


def test_wrong_ndim(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(np.zeros((4, 784))))
    assert read_error(path, 3) == f"{path}: IDX file has 2 dimensions, expected 3"


def test_truncated_header(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(images(2))[:10])
    assert read_error(path, 3) == f"{path}: truncated IDX header"


def test_truncated_body(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(images(2))[:-1])
    assert read_error(path, 3) == f"{path}: IDX body has 1567 bytes, expected 1568 for shape (2, 28, 28)"


def test_extra_bytes(tmp_path):
    path = write_gz(tmp_path / "x.gz", idx_bytes(np.arange(5)) + b"\x00")
    assert read_error(path, 1) == f"{path}: IDX body has 6 bytes, expected 5 for shape (5,)"


def test_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(images(4)))
    path = tmp_path / "x.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    assert "not a readable gzip file" in read_error(path, 3)


# --- load_raw -----------------------------------------------------------------------------------


def write_mnist(folder, n_train=6, n_train_labels=None, n_test=4, n_test_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    n_train_labels = n_train if n_train_labels is None else n_train_labels
    n_test_labels = n_test if n_test_labels is None else n_test_labels
    arrays = {
        "train_images": images(n_train),
        "train_labels": np.arange(n_train_labels) % 10,
        "test_images": 255 - images(n_test),
        "test_labels": (np.arange(n_test_labels) + 3) % 10,
    }
    names = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    for key, name in names.items():
        write_gz(folder / name, idx_bytes(arrays[key]))
    return arrays


def test_load_raw(tmp_path):
    expected = write_mnist(tmp_path)
    raw = mnist.load_raw(tmp_path)
    assert set(raw) == set(expected)
    for key, array in expected.items():
        np.testing.assert_array_equal(raw[key], array)
        assert raw[key].dtype == np.uint8


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"n_train": 6, "n_train_labels": 5}, "train has 6 images but 5 labels"),
        ({"n_test": 4, "n_test_labels": 7}, "test has 4 images but 7 labels"),
    ],
)
def test_load_raw_count_mismatch(tmp_path, counts, message):
    write_mnist(tmp_path, **counts)
    with pytest.raises(DataError) as info:
        mnist.load_raw(tmp_path)
    assert str(info.value) == f"{tmp_path}: {message}"


def test_load_raw_names_the_bad_file(tmp_path):
    write_mnist(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: not a readable gzip file"):
        mnist.load_raw(tmp_path)


# --- sources ------------------------------------------------------------------------------------


def test_sources_env_first_then_mirrors():
    mirrors = ["https://a.example/", "https://b.example/"]
    assert mnist.sources(mirrors, {"MNIST_MIRROR": "/data/mnist"}) == ["/data/mnist", *mirrors]
    assert mnist.sources(mirrors, {"MNIST_MIRROR": "  file:///x/  "}) == ["file:///x/", *mirrors]


@pytest.mark.parametrize("env", [{}, {"MNIST_MIRROR": ""}, {"MNIST_MIRROR": "   "}])
def test_sources_without_env_mirror(env):
    assert mnist.sources(("https://a.example/",), env) == ["https://a.example/"]


def test_sources_reads_os_environ(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path))
    assert mnist.sources(["https://a.example/"]) == [str(tmp_path), "https://a.example/"]
    monkeypatch.delenv("MNIST_MIRROR")
    assert mnist.sources(["https://a.example/"]) == ["https://a.example/"]


def test_params_mirrors_are_torchvisions():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["download"]["mirrors"] == MNIST.mirrors


def test_files_are_torchvisions_four_files():
    files = mnist.FILES
    assert files == dict(MNIST.resources)
    assert sorted(files) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]


# --- download -----------------------------------------------------------------------------------

GOOD = {"a.gz": b"first file contents", "b.gz": b"second file, other contents"}


def md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def fake_files(monkeypatch):
    """mnist.FILES replaced by two small synthetic files; no MNIST_MIRROR in the environment."""
    monkeypatch.setattr(mnist, "FILES", {name: md5(data) for name, data in GOOD.items()})
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    return GOOD


def folder_with(path, files):
    path.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def test_download_from_folder(tmp_path, fake_files):
    src = folder_with(tmp_path / "src", fake_files)
    out = tmp_path / "out" / "mnist"
    paths = mnist.download(out, [str(src)], timeout=2)
    assert paths == [out / "a.gz", out / "b.gz"]
    for name, data in fake_files.items():
        assert (out / name).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == ["a.gz", "b.gz"]
    mnist.verify(out)


def test_download_from_file_url(tmp_path, fake_files):
    src = folder_with(tmp_path / "src", fake_files)
    out = tmp_path / "out"
    for url in (src.as_uri(), src.as_uri() + "/"):
        paths = mnist.download(out, [url], timeout=2)
        assert [p.read_bytes() for p in paths] == [fake_files["a.gz"], fake_files["b.gz"]]


def test_env_mirror_is_used_first(tmp_path, fake_files, monkeypatch):
    good = folder_with(tmp_path / "good", fake_files)
    wrong = folder_with(tmp_path / "wrong", {name: b"not it" for name in fake_files})
    monkeypatch.setenv("MNIST_MIRROR", str(good))
    out = tmp_path / "out"
    mnist.download(out, [str(wrong)], timeout=2)
    assert (out / "a.gz").read_bytes() == fake_files["a.gz"]


def test_wrong_md5_source_is_skipped_for_the_next(tmp_path, fake_files):
    wrong = folder_with(tmp_path / "wrong", {"a.gz": b"tampered"})
    good = folder_with(tmp_path / "good", {"a.gz": fake_files["a.gz"]})
    out = tmp_path / "out"
    path = mnist.download_file("a.gz", md5(fake_files["a.gz"]), out, [str(wrong), str(good)], timeout=2)
    assert path == out / "a.gz"
    assert path.read_bytes() == fake_files["a.gz"]
    assert [p.name for p in out.iterdir()] == ["a.gz"]


def test_closed_port_counts_as_a_failure(tmp_path, fake_files):
    good = folder_with(tmp_path / "good", fake_files)
    out = tmp_path / "out"
    path = mnist.download_file("a.gz", md5(fake_files["a.gz"]), out, [CLOSED_PORT_URL, str(good)], timeout=2)
    assert path.read_bytes() == fake_files["a.gz"]


def test_all_sources_failing_lists_each_and_leaves_nothing(tmp_path, fake_files):
    wrong = folder_with(tmp_path / "wrong", {"a.gz": b"tampered"})
    empty = folder_with(tmp_path / "empty", {})
    missing_url = (tmp_path / "nowhere").as_uri()
    srcs = [str(wrong), str(empty), missing_url, CLOSED_PORT_URL]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError) as info:
        mnist.download_file("a.gz", md5(fake_files["a.gz"]), out, srcs, timeout=2)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("could not download a.gz: tried ")
    assert f"{wrong} (MD5 {md5(b'tampered')}, expected {md5(fake_files['a.gz'])})" in message
    assert f"{empty} (No such file or directory)" in message
    for src in srcs:
        assert src in message
    assert message.count(" (") >= len(srcs)
    assert "MNIST_MIRROR" in message
    assert list(out.iterdir()) == []  # no file and no temporary file


def test_download_failure_leaves_no_partial_file(tmp_path, fake_files):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="could not download a.gz"):
        mnist.download(out, [str(tmp_path / "no-such-folder")], timeout=2)
    assert list(out.iterdir()) == []


def test_no_sources(tmp_path, fake_files):
    with pytest.raises(DataError, match="could not download a.gz: tried no sources configured"):
        mnist.download(tmp_path / "out", [], timeout=2)


# --- verify -------------------------------------------------------------------------------------


def test_verify_missing_file(tmp_path, fake_files):
    folder_with(tmp_path, {"a.gz": fake_files["a.gz"]})
    with pytest.raises(DataError) as info:
        mnist.verify(tmp_path)
    assert str(info.value) == f"{tmp_path / 'b.gz'}: missing (run the download stage first: dvc repro download)"


def test_verify_corrupted_file(tmp_path, fake_files):
    folder_with(tmp_path, {**fake_files, "b.gz": b"corrupted"})
    with pytest.raises(DataError) as info:
        mnist.verify(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'b.gz'}: corrupted, MD5 {md5(b'corrupted')}, expected {md5(fake_files['b.gz'])} "
        "(dvc repro -f download)"
    )
