"""A checked downloader for the original MNIST and CIFAR-10 files: ``finwidth data fetch`` / :func:`fetch`.

Loading never downloads (``finwidth.data.load`` reads local files only); this is the one explicit way
to get the files. For each file:

* the canonical mirrors are tried in order (or the ones given), over HTTP(S) only;
* bytes go to ``NAME.part`` beside the destination; an interrupted download resumes from there with an
  HTTP range request, and restarts from zero when the server ignores the range or the resumed file
  fails its check;
* the size and the SHA-256 pinned below (and the MD5 the data set's page publishes, where there is
  one) must match before ``os.replace`` moves the file into place, so a destination file is complete
  and verified or absent: nothing else is ever written under its name;
* nothing downloaded is executed, unpickled or extracted (the CIFAR-10 archive stays as it is; the
  loader reads its binary records in place).

Pinned checksums (docs/data.md says where each comes from): MNIST's SHA-256 were computed from the
original files (their MD5 match the published ones, the values torchvision checks, and the SHA-256
match the TensorFlow Datasets registry); CIFAR-10's page publishes only an MD5, so the SHA-256 of
``cifar-10-binary.tar.gz`` is the one recorded in the TensorFlow Datasets registry
(``url_checksums/cifar10.txt``; not checked against a copy of the file here, none being available),
and both are checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from finwidth.errors import ConfigError, DataError

__all__ = ["CIFAR10", "DATASETS", "MNIST", "RemoteDataset", "RemoteFile", "default_fetch_root", "fetch"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One original file: its name on the mirrors and on disk, size in bytes and checksums."""

    name: str
    size: int
    sha256: str
    md5: str | None = None


@dataclass(frozen=True)
class RemoteDataset:
    """A data set's files, the folder (under the root) they go to, and the mirrors, in order."""

    name: str
    folder: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]


MNIST = RemoteDataset(
    name="mnist",
    folder="mnist",  # root/mnist/*.gz: the first layout the loader looks for
    files=(
        RemoteFile("train-images-idx3-ubyte.gz", 9912422,
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        RemoteFile("train-labels-idx1-ubyte.gz", 28881,
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432"),
        RemoteFile("t10k-images-idx3-ubyte.gz", 1648877,
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3"),
        RemoteFile("t10k-labels-idx1-ubyte.gz", 4542,
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
        "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's mirror
        "https://yann.lecun.com/exdb/mnist/",  # the original distribution (often refuses downloads)
    ),
)

CIFAR10 = RemoteDataset(
    name="cifar10",
    folder="",  # root/cifar-10-binary.tar.gz, read in place by the loader
    files=(
        RemoteFile("cifar-10-binary.tar.gz", 170052171,
                   "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", "c32a1d4ab5d03f1284b67883e8d87530"),
    ),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)

DATASETS = {"mnist": MNIST, "cifar10": CIFAR10}


def default_fetch_root() -> Path:
    """Where :func:`fetch` writes without ``root``: the first folder of ``$FINWIDTH_DATA`` if set, else
    finwidth's cache folder ``$XDG_CACHE_HOME/finwidth`` (``~/.cache/finwidth``), which the loader searches."""
    from finwidth.data.locate import ENV_VAR, _env_dirs, finwidth_cache

    dirs = _env_dirs(os.environ.get(ENV_VAR))
    return dirs[0] if dirs else finwidth_cache()


class _Failed(Exception):
    """One attempt at one URL failed; the reason goes into the final DataError."""


class _Restart(Exception):
    """The partial file does not belong to the server's file: start again from byte 0."""


def _check_mirrors(mirrors: Sequence[str]) -> tuple[str, ...]:
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    out = []
    for m in mirrors:
        if not isinstance(m, str) or not m.lower().startswith(("http://", "https://")):
            raise ConfigError(f"a mirror must be an http:// or https:// URL, got {m!r}")
        out.append(m if m.endswith("/") else m + "/")
    if not out:
        raise ConfigError("mirrors must name at least one URL")
    return tuple(out)


def _digests(path: Path) -> tuple[str, str, int]:
    sha, md5, n = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            n += len(chunk)
    return sha.hexdigest(), md5.hexdigest(), n


def _verify(path: Path, f: RemoteFile) -> str | None:
    """None if ``path`` is the original file, else what is wrong with it."""
    sha, md5, n = _digests(path)
    if n != f.size:
        return f"{n} bytes instead of {f.size} ({'truncated' if n < f.size else 'too long'})"
    if sha != f.sha256:
        return f"SHA-256 {sha} instead of {f.sha256}"
    if f.md5 is not None and md5 != f.md5:
        return f"MD5 {md5} instead of {f.md5}"
    return None


@contextlib.contextmanager
def _locked(part: Path):
    """Hold an exclusive lock on NAME.part.lock so two fetches never write the same file."""
    lock = part.with_name(part.name + ".lock")
    fh = open(lock, "a+b")  # noqa: SIM115 - closed below
    try:
        try:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - not POSIX: no lock
            pass
        except OSError:
            raise DataError(f"another process is downloading {part.name[:-5]} into {part.parent}; "
                            "wait for it, or remove the .part.lock file if it died") from None
        yield
    finally:
        fh.close()
        with contextlib.suppress(OSError):
            lock.unlink()


def _download(url: str, part: Path, f: RemoteFile, timeout: float, say: Callable[[str], None]) -> bool:
    """Bring ``part`` to f.size bytes from ``url``, resuming when it already holds a prefix.

    Returns whether it resumed (False: the file was downloaded from byte 0)."""
    have = part.stat().st_size if part.exists() else 0
    if have >= f.size:  # complete but unverified, or longer than the original: start again
        part.unlink()
        have = 0
    request = urllib.request.Request(url, headers={"User-Agent": "finwidth-fetch", "Accept-Encoding": "identity"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked: http(s) only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the range is not satisfiable: our prefix is not the server's file
            part.unlink()
            raise _Restart from None
        raise _Failed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Failed(f"{url}: {getattr(exc, 'reason', exc)}") from None
    with response:
        status = getattr(response, "status", 200)
        if have and status == 206 and response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            mode = "ab"
            say(f"  resuming at byte {have}")
        else:  # 200: the whole file (the server ignored the range): restart
            mode, have = "wb", 0
        announced = response.headers.get("Content-Length")
        with open(part, mode) as out:
            got = _copy(response, out, f.size - have, url)
            out.flush()
            os.fsync(out.fileno())
        if announced is not None and announced.isdigit() and got < int(announced):
            raise _Failed(f"{url}: the transfer broke off after {have + got} bytes; run again to resume")
    return mode == "ab"


def _copy(src: BinaryIO, dst: BinaryIO, expected: int, url: str) -> int:
    """Copy at most ``expected`` bytes (one more is an error); returns how many were copied."""
    got = 0
    while got <= expected:
        try:
            chunk = src.read(min(_CHUNK, expected + 1 - got))
        except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
            raise _Failed(f"{url}: the transfer broke off after {got} bytes ({exc}); run again to resume") from None
        if not chunk:
            break
        dst.write(chunk)
        got += len(chunk)
    if got > expected:
        raise _Failed(f"{url}: the server sent more bytes than the original file has")
    return got


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fetch_file(f: RemoteFile, folder: Path, mirrors: tuple[str, ...], timeout: float,
                say: Callable[[str], None]) -> None:
    dest = folder / f.name
    if dest.exists():
        problem = _verify(dest, f)
        if problem is None:
            say(f"{dest}: present, checksum verified")
            return
        say(f"{dest}: present but not the original ({problem}); downloading it again")
    part = dest.with_name(dest.name + ".part")
    tried: list[str] = []
    with _locked(part):
        for base in mirrors:
            url = base + f.name
            while True:
                say(f"{f.name}: {url}")
                try:
                    resumed = _download(url, part, f, timeout, say)
                except _Restart:
                    tried.append(f"{url}: refused to resume the partial file (HTTP 416); restarted")
                    continue
                except _Failed as exc:
                    tried.append(str(exc))
                    if part.exists() and part.stat().st_size >= f.size:  # too long: not a prefix
                        part.unlink()
                    break  # next mirror; a partial file, if any, is kept and resumed there
                problem = _verify(part, f)
                if problem is None:
                    os.replace(part, dest)
                    _fsync_dir(folder)
                    say(f"{dest}: {f.size} bytes, SHA-256 verified")
                    return
                tried.append(f"{url}: {problem}; the download was discarded")
                part.unlink()
                if not resumed:
                    break  # a whole download from this mirror is wrong: try the next one
                # else the resumed prefix may have come from elsewhere: restart from 0 here
    lines = [f"could not download {f.name} with the pinned checksum; tried:"] + [f"  - {t}" for t in tried]
    lines.append(f"{dest} was not written." + (f" The partial download {part} is kept and resumed next time."
                                                if part.exists() else ""))
    raise DataError("\n".join(lines))


def fetch(name: str, root: str | os.PathLike | None = None, *, mirrors: Sequence[str] | None = None,
          timeout: float = 60.0, quiet: bool = False) -> Path:
    """Download the original files of ``name`` into ``root``, checked against pinned checksums.

    Parameters
    ----------
    name : {"mnist", "cifar10"}
        MNIST: the four ``*-ubyte.gz`` files into ``root/mnist/``; CIFAR-10: ``cifar-10-binary.tar.gz``
        into ``root/`` (not extracted: the loader reads it in place). 11.6 MB and 170 MB.
    root : path-like, optional
        Destination folder (created if needed). Default :func:`default_fetch_root`: the first folder of
        ``$FINWIDTH_DATA``, else ``~/.cache/finwidth``, both searched by :func:`finwidth.data.load`.
    mirrors : sequence of str, optional
        Base URLs (http or https) tried in order instead of the canonical mirrors, e.g. an institution's
        copy; the file name is appended. The pinned checksums apply whatever the mirror.
    timeout : float
        Seconds to wait for a server before trying the next mirror.
    quiet : bool
        No progress lines on stderr.

    Returns
    -------
    Path
        ``root``, ready for ``load(name, root=...)``.

    Raises
    ------
    DataError
        No mirror delivered a file with the pinned size and checksums (every URL tried and what went
        wrong are listed; nothing is written under the file's name).
    ConfigError
        An unknown data set or a mirror that is not an http(s) URL.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} to fetch; available: {sorted(DATASETS)}")
    spec = DATASETS[name]
    urls = _check_mirrors(spec.mirrors if mirrors is None else mirrors)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    base = Path(root).expanduser() if root is not None else default_fetch_root()
    folder = base / spec.folder if spec.folder else base
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {folder}: {exc}") from None

    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    for f in spec.files:
        _fetch_file(f, folder, urls, float(timeout), say)
    return base
