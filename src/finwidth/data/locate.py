"""Where the data files are looked for. Nothing is downloaded here (``finwidth data fetch`` does that).

Search order (first complete copy wins):

1. the explicit ``root`` argument;
2. each directory of the environment variable ``FINWIDTH_DATA`` (``os.pathsep``-separated);
3. the usual caches: keras ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``) and torch
   ``$TORCH_HOME/datasets`` (default ``$XDG_CACHE_HOME/torch/datasets``, i.e. ``~/.cache/torch/datasets``),
   then finwidth's own ``$XDG_CACHE_HOME/finwidth`` (``~/.cache/finwidth``, where ``fetch`` writes by default);
4. MNIST only: the subset embedded in the package (the first 100 training and 1000 test images of the
   digits 0 and 1, enough for the papers' preset at the demo's size; :mod:`finwidth.data.embedded`).

Inside each directory ``D`` the following layouts are recognised, in this order:

MNIST
    ``D/mnist/``, ``D/MNIST/raw/`` (torchvision), ``D/`` holding the four IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte`` (each with or without ``.gz``; the dotted variants
    ``train-images.idx3-ubyte`` are accepted too); then keras' ``D/mnist.npz``.
CIFAR-10
    ``D/cifar10/cifar-10-batches-bin/``, ``D/cifar-10-batches-bin/``, ``D/cifar-10-binary.tar.gz``,
    ``D/cifar10/cifar-10-binary.tar.gz``, then the python formats ``D/cifar10/cifar-10-batches-py/``,
    ``D/cifar-10-batches-py/``, ``D/cifar-10-python.tar.gz``, ``D/cifar10/cifar-10-python.tar.gz``.
    The binary format is preferred: it needs no unpickling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from finwidth.errors import ConfigError, DataError

ENV_VAR = "FINWIDTH_DATA"

MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

# the subsets shipped inside the package (finwidth/data/embedded/README.md)
EMBEDDED = {"mnist": Path(__file__).resolve().parent / "embedded" / "mnist01.npz"}

HOW_TO_GET = {
    "mnist": (
        "Run `finwidth data fetch mnist [--root DIR]` (or finwidth.data.fetch('mnist')): it downloads the "
        "original files and checks their SHA-256. Or obtain the four MNIST files train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz (the original distribution, or a mirror such "
        "as https://ossci-datasets.s3.amazonaws.com/mnist/ used by torchvision) and put them in <dir>/mnist/, "
        "or copy keras' mnist.npz into <dir>; then pass root=<dir> or set FINWIDTH_DATA=<dir>. "
        "torchvision.datasets.MNIST(<dir>, download=True) or keras.datasets.mnist.load_data(), run once in "
        "any environment, also write files that are found here."
    ),
    "cifar10": (
        "Run `finwidth data fetch cifar10 [--root DIR]` (or finwidth.data.fetch('cifar10')): it downloads "
        "cifar-10-binary.tar.gz (170 MB) and checks its SHA-256. Or obtain cifar-10-binary.tar.gz (preferred) "
        "or cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and put the archive (no need to extract it) in <dir>; "
        "then pass root=<dir> or set FINWIDTH_DATA=<dir>. "
        "torchvision.datasets.CIFAR10(<dir>, download=True), run once in any environment, also works."
    ),
}


@dataclass(frozen=True)
class Source:
    """A complete copy of a dataset on disk.

    Attributes
    ----------
    dataset : {"mnist", "cifar10"}
    format : {"idx", "npz", "cifar-bin", "cifar-py", "cifar-bin-tar", "cifar-py-tar"}
    files : tuple of (role, Path)
        For ``idx``: roles ``train_images``, ``train_labels``, ``test_images``, ``test_labels``;
        for the CIFAR folders: the batch names; for ``npz`` and archives: ``"archive"``.
    """

    dataset: str
    format: str
    files: tuple[tuple[str, Path], ...]

    def file(self, role: str) -> Path:
        """The path playing ``role`` (e.g. ``"train_images"``, ``"test_batch"``, ``"archive"``)."""
        return dict(self.files)[role]

    @property
    def paths(self) -> tuple[str, ...]:
        """All file paths, as strings, in role order."""
        return tuple(str(p) for _, p in self.files)


def _env_dirs(value: str | None) -> list[Path]:
    if not value:
        return []
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def _cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def finwidth_cache() -> Path:
    """finwidth's own data folder, ``$XDG_CACHE_HOME/finwidth`` (default ``~/.cache/finwidth``)."""
    return _cache_home() / "finwidth"


def default_roots() -> list[Path]:
    """The directories searched after an explicit ``root``, in order.

    ``FINWIDTH_DATA`` entries first, then the keras and torch caches, then finwidth's cache
    (whether or not they exist).
    """
    dirs = _env_dirs(os.environ.get(ENV_VAR))
    keras_home = os.environ.get("KERAS_HOME")
    dirs.append(Path(keras_home).expanduser() / "datasets" if keras_home else Path.home() / ".keras" / "datasets")
    torch_home = os.environ.get("TORCH_HOME")
    dirs.append(Path(torch_home).expanduser() / "datasets" if torch_home else _cache_home() / "torch" / "datasets")
    dirs.append(finwidth_cache())
    return dirs


def search_paths(root: str | os.PathLike | None = None) -> list[Path]:
    """All directories searched, in order: ``root`` (if given), then :func:`default_roots`.

    Raises
    ------
    ConfigError
        If ``root`` is given but is not an existing directory.
    """
    dirs: list[Path] = []
    if root is not None:
        r = Path(root).expanduser()
        if not r.is_dir():
            raise ConfigError(f"root={str(root)!r} is not an existing directory")
        dirs.append(r)
    for d in default_roots():
        if d not in dirs:
            dirs.append(d)
    return dirs


def _find_idx_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _mnist_in(base: Path, notes: list[str]) -> Source | None:
    for folder in (base / "mnist", base / "MNIST" / "raw", base):
        if not folder.is_dir():
            continue
        found = {role: _find_idx_file(folder, names) for role, names in MNIST_FILES.items()}
        if all(found.values()):
            return Source("mnist", "idx", tuple((r, p) for r, p in found.items()))
        if any(found.values()):
            missing = [MNIST_FILES[r][0] for r, p in found.items() if p is None]
            notes.append(f"{folder}: incomplete MNIST, missing {missing}")
    npz = base / "mnist.npz"
    if npz.is_file():
        return Source("mnist", "npz", (("archive", npz),))
    return None


def _cifar_dir(folder: Path, fmt: str, notes: list[str]) -> Source | None:
    if not folder.is_dir():
        return None
    suffix = ".bin" if fmt == "cifar-bin" else ""
    found = {b: folder / f"{b}{suffix}" for b in CIFAR10_BATCHES}
    missing = [p.name for p in found.values() if not p.is_file()]
    if missing:
        notes.append(f"{folder}: incomplete CIFAR-10, missing {missing}")
        return None
    return Source("cifar10", fmt, tuple(found.items()))


def _cifar_in(base: Path, notes: list[str]) -> Source | None:
    candidates = [
        ("dir", base / "cifar10" / "cifar-10-batches-bin", "cifar-bin"),
        ("dir", base / "cifar-10-batches-bin", "cifar-bin"),
        ("tar", base / "cifar-10-binary.tar.gz", "cifar-bin-tar"),
        ("tar", base / "cifar10" / "cifar-10-binary.tar.gz", "cifar-bin-tar"),
        ("dir", base / "cifar10" / "cifar-10-batches-py", "cifar-py"),
        ("dir", base / "cifar-10-batches-py", "cifar-py"),
        ("tar", base / "cifar-10-python.tar.gz", "cifar-py-tar"),
        ("tar", base / "cifar10" / "cifar-10-python.tar.gz", "cifar-py-tar"),
    ]
    for kind, path, fmt in candidates:
        if kind == "dir":
            source = _cifar_dir(path, fmt, notes)
            if source is not None:
                return source
        elif path.is_file():
            return Source("cifar10", fmt, (("archive", path),))
    return None


def locate(name: str, root: str | os.PathLike | None = None, *, embedded: bool = True) -> Source:
    """Find a complete copy of dataset ``name`` ("mnist" or "cifar10").

    With ``embedded`` (the default), MNIST falls back on the subset shipped in the package (format
    ``"embedded"``) when no files are found; :func:`finwidth.data.load` then checks that the request
    lies inside it.

    Raises
    ------
    DataError
        If no complete copy exists: the message lists every directory searched, any incomplete copies
        seen, and how to obtain the files.
    """
    finder = {"mnist": _mnist_in, "cifar10": _cifar_in}.get(name)
    if finder is None:
        raise ConfigError(f"unknown dataset {name!r}; available: 'mnist', 'cifar10'")
    notes: list[str] = []
    searched = search_paths(root)
    for base in searched:
        if not base.is_dir():
            continue
        source = finder(base, notes)
        if source is not None:
            return source
    if embedded and name in EMBEDDED:
        return Source(name, "embedded", (("archive", EMBEDDED[name]),))
    raise DataError(not_found_message(name, root, searched, notes))


def not_found_message(name: str, root, searched: list[Path], notes: list[str]) -> str:  # noqa: ANN001
    """The message of a missing data set: every place searched, incomplete copies, how to get the files."""
    lines = [f"{name} not found. Searched, in order:"]
    lines += [f"  - {d}{'' if d.is_dir() else ' (does not exist)'}" for d in searched]
    if root is None:
        lines.append(f"  (no root= given; {ENV_VAR} is {'unset' if not os.environ.get(ENV_VAR) else 'set'})")
    if notes:
        lines.append("Incomplete copies seen:")
        lines += [f"  - {n}" for n in notes]
    lines.append("Layouts recognised in each directory are listed in docs/data.md. Nothing is downloaded at run time.")
    lines.append(HOW_TO_GET[name])
    return "\n".join(lines)
