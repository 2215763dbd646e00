"""MNIST: verified download of the four official files and parsing of their IDX format."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nncompress.errors import DataError
from nncompress.fileio import atomic_path

# The official file names and MD5 sums, as torchvision downloads and checks them.
# Written out rather than read from torchvision.datasets.MNIST.resources (a test checks they agree):
# importing torchvision takes seconds, which every stage would pay.
FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MIRROR_ENV = "MNIST_MIRROR"
TRAIN_SIZE = 60_000  # images in the official training file
TEST_SIZE = 10_000  # and in the test file

# IDX type codes (http://yann.lecun.com/exdb/mnist/); MNIST uses only unsigned bytes.
_IDX_UBYTE = 0x08


def _md5(path: str | os.PathLike[str]) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sources(mirrors: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """Where to look, in order: $MNIST_MIRROR (a folder or a base URL) first, then `mirrors`."""
    env = os.environ if env is None else env
    extra = env.get(MIRROR_ENV, "").strip()
    return ([extra] if extra else []) + list(mirrors)


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file", "ftp")


def _fetch(source: str, name: str, dest: Path, timeout: float) -> None:
    """Copy `name` from a folder or base URL into `dest`."""
    if _is_url(source):
        url = urllib.parse.urljoin(source.rstrip("/") + "/", name)
        request = urllib.request.Request(url, headers={"User-Agent": "nncompress"})
        with urllib.request.urlopen(request, timeout=timeout) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    else:
        shutil.copyfile(Path(source).expanduser() / name, dest)


def download_file(name: str, md5: str, out_dir: Path, srcs: Sequence[str], timeout: float) -> Path:
    """Fetch one file from the first source that yields it with the right MD5.

    The file appears in `out_dir` only once verified; failures raise a DataError listing every
    source tried and why it failed.
    """
    target = out_dir / name
    failures = []
    for source in srcs:
        try:
            with atomic_path(target) as tmp:
                _fetch(source, name, tmp, timeout)
                got = _md5(tmp)
                if got != md5:
                    raise ValueError(f"MD5 {got}, expected {md5}")
            return target
        except urllib.error.URLError as exc:  # before OSError, of which it is a subclass
            failures.append(f"{source} ({exc.reason})")
        except OSError as exc:
            failures.append(f"{source} ({exc.strerror or exc})")
        except (ValueError, http.client.HTTPException) as exc:  # bad MD5, bad URL, broken response
            failures.append(f"{source} ({exc or type(exc).__name__})")
    tried = "; ".join(failures) if failures else "no sources configured"
    raise DataError(
        f"could not download {name}: tried {tried}. Set {MIRROR_ENV} to a folder or URL holding "
        f"the official MNIST files"
    )


def download(out_dir: Path, mirrors: Sequence[str], timeout: float) -> list[Path]:
    """Download and verify all four MNIST files into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    srcs = sources(mirrors)
    return [download_file(name, md5, out_dir, srcs, timeout) for name, md5 in FILES.items()]


def verify(data_dir: Path) -> None:
    """Check that all four files are present with the official checksums."""
    for name, md5 in FILES.items():
        path = data_dir / name
        if not path.is_file():
            raise DataError(f"{path}: missing (run the download stage first: dvc repro download)")
        got = _md5(path)
        if got != md5:
            raise DataError(f"{path}: corrupted, MD5 {got}, expected {md5} (dvc repro -f download)")


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes into an array, checking header and length."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _IDX_UBYTE:
        raise DataError(f"{path}: IDX data type 0x{raw[2]:02x}, expected unsigned bytes (0x08)")
    ndim = raw[3]
    if ndim != expected_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(f"{path}: IDX body has {len(raw) - header} bytes, expected {size} for shape {shape}")
    # bytearray: a writable buffer, so torch.from_numpy gets a writable array
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)


def load_raw(data_dir: Path) -> dict[str, np.ndarray]:
    """The four arrays: train/test images (N, 28, 28) uint8 and labels (N,) uint8."""
    arrays = {
        "train_images": read_idx(data_dir / "train-images-idx3-ubyte.gz", 3),
        "train_labels": read_idx(data_dir / "train-labels-idx1-ubyte.gz", 1),
        "test_images": read_idx(data_dir / "t10k-images-idx3-ubyte.gz", 3),
        "test_labels": read_idx(data_dir / "t10k-labels-idx1-ubyte.gz", 1),
    }
    for part in ("train", "test"):
        n_img, n_lab = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if n_img != n_lab:
            raise DataError(f"{data_dir}: {part} has {n_img} images but {n_lab} labels")
    return arrays
