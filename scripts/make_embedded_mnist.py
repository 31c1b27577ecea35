"""Build the MNIST 0/1 subset embedded in the package (src/finwidth/data/embedded/mnist01.npz).

It holds what the papers' preset needs for the demo and the README tour: the first 100 training and
the first 1000 test images of the digits 0 and 1, in file order, as the original uint8 pixels, with
their labels and their positions in the original splits. Usage (from the repository root):

    python scripts/make_embedded_mnist.py /path/to/data/mnist [OUT]

where the folder holds the four original *-ubyte.gz files; their SHA-256 are checked first. OUT
defaults to the package's file; the test suite rebuilds it elsewhere and compares the bytes.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from finwidth.data.download import MNIST
from finwidth.data.formats import read_mnist_idx

N_TRAIN, N_TEST, CLASSES = 100, 1000, (0, 1)
OUT = Path(__file__).resolve().parents[1] / "src" / "finwidth" / "data" / "embedded" / "mnist01.npz"


def main(folder: str, out: Path = OUT) -> None:
    d = Path(folder)
    for f in MNIST.files:
        digest = hashlib.sha256((d / f.name).read_bytes()).hexdigest()
        if digest != f.sha256:
            sys.exit(f"{d / f.name}: SHA-256 {digest} is not the original's {f.sha256}")
    arrays = {}
    for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images, labels = read_mnist_idx(d / f"{prefix}-images-idx3-ubyte.gz", d / f"{prefix}-labels-idx1-ubyte.gz")
        index = np.flatnonzero(np.isin(labels, CLASSES))[:n]
        arrays[f"x_{split}"] = np.ascontiguousarray(images[index])
        arrays[f"y_{split}"] = np.ascontiguousarray(labels[index])
        arrays[f"{split}_index"] = index.astype(np.int32)
    # a reproducible zip: fixed member order and timestamps, so the same input gives the same bytes
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[key], allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1998, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue(), compresslevel=9)
    out.write_bytes(buf.getvalue())
    print(f"{out}: {out.stat().st_size} bytes, sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist", Path(sys.argv[2]) if len(sys.argv) > 2 else OUT)
