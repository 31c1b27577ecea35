"""finwidth.data.fetch (module finwidth.data.download) against a local HTTP server on 127.0.0.1 serving the real MNIST files and broken
copies (bad checksum, truncated, broken transfers, server errors, servers that ignore ranges).

Every socket connection is checked to go to the loopback address, and proxies are switched off, so
nothing but the test's own server is contacted; everything is written under the test's temporary folder.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import synth_formats as sf

from finwidth import cli
from finwidth.data import download as fetch_mod
from finwidth.data import load
from finwidth.data.download import MNIST, RemoteDataset, RemoteFile, fetch
from finwidth.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    """Fail any connection that is not to the loopback address; no proxies; no real caches."""
    real_connect = socket.socket.connect

    def connect(self, address):  # noqa: ANN001, ANN202
        host = address[0] if isinstance(address, tuple) else address
        if not ipaddress.ip_address(host).is_loopback:
            raise AssertionError(f"the test tried to connect to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("FINWIDTH_DATA", "XDG_CACHE_HOME", "KERAS_HOME", "TORCH_HOME"):
        monkeypatch.delenv(var, raising=False)


def test_the_guard_refuses_other_addresses():
    with socket.socket() as s, pytest.raises(AssertionError, match="tried to connect"):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: refused by the fixture before any packet is sent


class Server:
    """Serves ``files`` (name -> bytes) under /MODE/NAME; records (mode, name, Range header) per request.

    Modes: good (ranges honoured), bad (one byte flipped), short (the first half only), broken (announces
    the whole file, sends half, closes), error (HTTP 500), norange (always the whole file, status 200).
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002, ANN202
                pass

            def do_GET(self):  # noqa: N802, ANN202
                _, mode, name = self.path.split("/", 2)
                rng = self.headers.get("Range")
                server.requests.append((mode, name, rng))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if mode == "error":
                    self.send_error(500, "broken on purpose")
                    return
                if mode == "bad":
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                elif mode == "short":
                    data = data[: len(data) // 2]
                start = 0
                if rng and mode in ("good", "bad"):
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if mode == "broken":
                    body = body[: len(body) // 2]
                self.wfile.write(body)
                self.wfile.flush()
                if mode == "broken":
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def real_mnist(mnist_root):
    folder = Path(mnist_root) / "mnist"
    files = {f.name: (folder / f.name).read_bytes() for f in MNIST.files}
    server = Server(files)
    yield server, files
    server.close()


def _only(monkeypatch, name: str, *files: RemoteFile, folder: str = "mnist") -> None:
    spec = RemoteDataset(name, folder, files, ("https://example.invalid/never-used/",))
    monkeypatch.setitem(fetch_mod.DATASETS, name, spec)


def _only_mnist(monkeypatch, prefix: str) -> RemoteFile:
    """Make `fetch("mnist")` fetch only the real MNIST file whose name starts with ``prefix``."""
    f = next(x for x in MNIST.files if x.name.startswith(prefix))
    _only(monkeypatch, "mnist", f)
    return f


@pytest.mark.slow  # reads and checks the full MNIST files
@pytest.mark.realdata
def test_fetch_real_mnist_falls_back_over_bad_mirrors_and_loads(real_mnist, tmp_path, mnist_root):
    server, files = real_mnist
    root = tmp_path / "data"
    out = fetch("mnist", root, mirrors=[server.url("bad"), server.url("error"), server.url("good")], quiet=True)
    assert out == root
    for f in MNIST.files:
        assert (root / "mnist" / f.name).read_bytes() == files[f.name]
    assert sorted(p.name for p in (root / "mnist").iterdir()) == sorted(f.name for f in MNIST.files)  # no leftovers
    # each file: the bad copy was refused (checksum), the erroring mirror skipped, the good one used
    assert [m for m, n, _ in server.requests if n == MNIST.files[0].name] == ["bad", "error", "good"]
    got = load("mnist", classes=(3, 8), n_train=50, n_test=20, root=root)
    ref = load("mnist", classes=(3, 8), n_train=50, n_test=20, root=mnist_root)
    assert got.source_format == "idx" and np.array_equal(got.X_train, ref.X_train) and np.array_equal(got.y_test, ref.y_test)
    server.requests.clear()
    fetch("mnist", root, mirrors=[server.url("good")], quiet=True)  # already there and verified: no download
    assert server.requests == []


@pytest.mark.realdata
def test_pinned_checksums_are_those_of_the_original_files(mnist_root):
    for f in MNIST.files:
        data = (Path(mnist_root) / "mnist" / f.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()) == (f.size, f.sha256, f.md5)


@pytest.mark.realdata
def test_broken_transfer_keeps_the_prefix_and_resumes(real_mnist, tmp_path, monkeypatch):
    server, files = real_mnist
    f = _only_mnist(monkeypatch, "t10k-images")
    root = tmp_path / "d"
    with pytest.raises(DataError, match="broke off after") as info:
        fetch("mnist", root, mirrors=[server.url("broken")], quiet=True)
    part = root / "mnist" / (f.name + ".part")
    assert "is kept and resumed next time" in str(info.value)
    assert not (root / "mnist" / f.name).exists() and 0 < part.stat().st_size < f.size
    have = part.stat().st_size
    fetch("mnist", root, mirrors=[server.url("good")], quiet=True)
    assert server.requests[-1] == ("good", f.name, f"bytes={have}-")  # resumed, not restarted
    assert (root / "mnist" / f.name).read_bytes() == files[f.name] and not part.exists()


@pytest.mark.realdata
def test_restarts_when_the_server_ignores_the_range_or_the_prefix_is_wrong(real_mnist, tmp_path, monkeypatch):
    server, files = real_mnist
    f = _only_mnist(monkeypatch, "train-labels")
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    part = folder / (f.name + ".part")
    part.write_bytes(files[f.name][:1000])
    fetch("mnist", tmp_path / "d", mirrors=[server.url("norange")], quiet=True)  # 200 instead of 206
    assert (folder / f.name).read_bytes() == files[f.name]
    (folder / f.name).unlink()
    part.write_bytes(b"\0" * 1000)  # a prefix of some other file: resuming gives a wrong checksum
    server.requests.clear()
    fetch("mnist", tmp_path / "d", mirrors=[server.url("good")], quiet=True)
    assert [r[2] for r in server.requests] == ["bytes=1000-", None]  # resumed, refused, restarted from 0
    assert (folder / f.name).read_bytes() == files[f.name]


@pytest.mark.realdata
def test_truncated_bad_and_failing_servers_leave_nothing(real_mnist, tmp_path, monkeypatch):
    server, files = real_mnist
    f = _only_mnist(monkeypatch, "t10k-labels")
    root = tmp_path / "d"
    with pytest.raises(DataError) as info:
        fetch("mnist", root, mirrors=[server.url("short"), server.url("bad"), server.url("error")], quiet=True)
    msg = str(info.value)
    assert f"{f.size // 2} bytes instead of {f.size} (truncated)" in msg
    assert f"SHA-256 {hashlib.sha256(files[f.name][:100] + bytes([files[f.name][100] ^ 0xFF]) + files[f.name][101:]).hexdigest()}" in msg
    assert "HTTP 500" in msg and "was not written" in msg
    assert list((root / "mnist").iterdir()) == []  # no file, no .part, no lock
    # a corrupt file already in place is replaced by a verified one
    (root / "mnist" / f.name).write_bytes(b"not mnist")
    fetch("mnist", root, mirrors=[server.url("good")], quiet=True)
    assert (root / "mnist" / f.name).read_bytes() == files[f.name]


def test_cifar_archive_is_stored_as_is_and_loaded_in_place(tmp_path, monkeypatch):
    # a small archive in the official layout (the real one is 170 MB): checks the CIFAR path end to end
    src = sf.write_cifar_tar(tmp_path / "src" / "cifar-10-binary.tar.gz", sf.fake_cifar(4), fmt="bin")
    data = src.read_bytes()
    _only(monkeypatch, "cifar10", RemoteFile(src.name, len(data), hashlib.sha256(data).hexdigest(),
                                             hashlib.md5(data).hexdigest()), folder="")
    server = Server({src.name: data})
    try:
        root = fetch("cifar10", tmp_path / "root", mirrors=[server.url("good")], quiet=True)
    finally:
        server.close()
    assert [p.name for p in root.iterdir()] == [src.name]  # nothing extracted
    d = load("cifar10", classes=None, n_train=20, n_test=4, preset="raw", root=root)
    assert d.source_format == "cifar-bin-tar" and d.X_train.shape == (20, 3072)


def test_cli_fetch_and_bad_arguments(tmp_path, monkeypatch, capsys):
    payload = b"x" * 5000
    _only(monkeypatch, "mnist", RemoteFile("f.gz", len(payload), hashlib.sha256(payload).hexdigest()))
    server = Server({"f.gz": payload})
    try:
        assert cli.main(["data", "fetch", "mnist", "--root", str(tmp_path / "r"), "--mirror", server.url("good"),
                         "--quiet"]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / "r")
        assert (tmp_path / "r" / "mnist" / "f.gz").read_bytes() == payload
        assert cli.main(["data", "fetch", "mnist", "--root", str(tmp_path / "s"), "--mirror", server.url("error"),
                         "--quiet"]) == cli.EXIT_USAGE
        assert "HTTP 500" in capsys.readouterr().err
    finally:
        server.close()
    assert cli.main(["data", "fetch", "mnist", "--mirror", "file:///etc/"]) == cli.EXIT_USAGE
    assert "http:// or https:// URL" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown dataset 'svhn'"):
        fetch("svhn")


def test_default_root_is_searched_by_the_loader(tmp_path, monkeypatch):
    from finwidth.data import default_fetch_root, search_paths

    assert default_fetch_root() == tmp_path / "home" / ".cache" / "finwidth"
    assert default_fetch_root() in search_paths()
    monkeypatch.setenv("FINWIDTH_DATA", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert default_fetch_root() == tmp_path / "a"
