"""Fetching into the cache: directory and HTTP mirrors, verification, retries, failures.

HTTP is exercised against a local server on 127.0.0.1 (an ephemeral port), so
no test touches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from descend.data import load
from descend.data.download import cache_dir, fetch, mirror_list, sources
from descend.errors import DownloadError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
GZ = gzip.compress(PAYLOAD)


@pytest.fixture
def server():
    """A local HTTP server; ``routes[path]`` is a list of (status, body) served in turn.

    A status of -1 announces more bytes than it sends (a transfer cut short).
    """
    routes: dict[str, list[tuple[int, bytes]]] = {}
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            queue = routes.get(self.path, [(404, b"not here")])
            status, body = queue.pop(0) if len(queue) > 1 else queue[0]
            self.send_response(200 if status == -1 else status)
            self.send_header("Content-Length", str(len(body) + (100 if status == -1 else 0)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_port}", routes=routes, hits=hits)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def put(root: Path, body: bytes = GZ, dataset="toy", file="toy.gz") -> Path:
    (root / dataset).mkdir(parents=True, exist_ok=True)
    (root / dataset / file).write_bytes(body)
    return root


def get(tmp_path, mirrors, **kw) -> Path:
    return fetch("toy", "toy.gz", SHA, kw.pop("urls", ()), mirrors=mirrors,
                 cache=tmp_path / "cache", backoff=0, **kw)


def test_mirror_list_keeps_urls_with_ports_whole():
    assert mirror_list("../shared/data:http://127.0.0.1:8000/m:/abs:https://h.org/x/") == [
        "../shared/data", "http://127.0.0.1:8000/m", "/abs", "https://h.org/x/"]
    assert mirror_list("") == []


def test_sources_mirrors_first_then_public():
    assert sources("mnist", "f.gz", ["https://pub/a/"], ["/m/", "http://h:1"]) == [
        "/m/mnist/f.gz", "http://h:1/mnist/f.gz", "https://pub/a/f.gz"]


def test_cache_dir_from_env_or_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DESCEND_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "descend"


def test_directory_mirror_copies_into_cache_then_cache_is_used(tmp_path):
    mirror = put(tmp_path / "mirror")
    path = get(tmp_path, [str(mirror)])
    assert path == tmp_path / "cache" / "toy" / "toy.gz" and path.read_bytes() == GZ
    (mirror / "toy" / "toy.gz").unlink()
    assert get(tmp_path, []) == path  # no source needed any more


def test_corrupt_cached_file_is_fetched_again(tmp_path):
    put(tmp_path / "cache", b"garbage")
    path = get(tmp_path, [str(put(tmp_path / "mirror"))])
    assert path.read_bytes() == GZ


def test_hash_is_of_the_payload_so_recompressed_or_plain_copies_verify(tmp_path, server):
    server.routes["/toy/toy.gz"] = [(200, gzip.compress(PAYLOAD, compresslevel=1, mtime=7))]
    assert gzip.decompress(get(tmp_path, [server.url]).read_bytes()) == PAYLOAD
    plain = put(tmp_path / "plain", PAYLOAD)
    assert get(tmp_path / "p", [str(plain)]).read_bytes() == PAYLOAD


def test_wrong_file_falls_through_to_next_mirror(tmp_path, server):
    bad = put(tmp_path / "bad", gzip.compress(b"other"))
    server.routes["/toy/toy.gz"] = [(200, GZ)]
    assert get(tmp_path, [str(bad), server.url]).read_bytes() == GZ


def test_public_url_used_after_mirrors(tmp_path, server):
    server.routes["/pub/toy.gz"] = [(200, GZ)]
    assert get(tmp_path, [str(tmp_path / "none")], urls=[server.url + "/pub/"]).read_bytes() == GZ


@pytest.mark.parametrize("first", [(503, b""), (429, b""), (-1, GZ[:10])])
def test_transient_errors_are_retried(tmp_path, server, first):
    server.routes["/toy/toy.gz"] = [first, first, (200, GZ)]
    assert get(tmp_path, [server.url], retries=2).read_bytes() == GZ
    assert len(server.hits) == 3


def test_retries_are_bounded(tmp_path, server):
    server.routes["/toy/toy.gz"] = [(503, b"")]
    with pytest.raises(DownloadError, match="HTTP 503 .* after 3 attempts"):
        get(tmp_path, [server.url], retries=2)
    assert len(server.hits) == 3


def test_not_found_is_not_retried(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404"):
        get(tmp_path, [server.url], retries=5)
    assert len(server.hits) == 1


def test_all_sources_failing_is_one_line_naming_each(tmp_path, server):
    server.routes["/toy/toy.gz"] = [(200, gzip.compress(b"tampered"))]
    missing = tmp_path / "missing"
    with pytest.raises(DownloadError) as info:
        get(tmp_path, [str(missing), server.url], urls=[server.url + "/gone/"])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("could not get toy/toy.gz: ")
    assert f"{missing}/toy/toy.gz (not found)" in msg
    assert f"{server.url}/toy/toy.gz (SHA-256 mismatch" in msg
    assert f"{server.url}/gone/toy.gz (HTTP 404" in msg
    assert list((tmp_path / "cache" / "toy").iterdir()) == []  # no partial files left


def test_unreachable_server_fails_fast(tmp_path, server):
    url = server.url.rsplit(":", 1)[0] + ":1"  # nothing listens on port 1
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1:1/toy/toy\.gz \("):
        get(tmp_path, [url])


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_for_large_files_on_a_terminal(tmp_path, server, monkeypatch, capsys):
    big = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes()
    server.routes["/toy/big.gz"] = [(200, gzip.compress(big, compresslevel=0))]
    sha = hashlib.sha256(big).hexdigest()
    fetch("toy", "big.gz", sha, mirrors=[server.url], cache=tmp_path / "a")
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    fetch("toy", "big.gz", sha, mirrors=[server.url], cache=tmp_path / "b")
    assert "downloading toy/big.gz: 100%" in tty.getvalue()
    tty.truncate(0)
    server.routes["/toy/toy.gz"] = [(200, GZ)]
    get(tmp_path / "c", [server.url])
    assert tty.getvalue() == ""  # small file: no progress line


def test_named_mnist_through_an_http_mirror(tmp_path, server, mirror_dir, monkeypatch):
    for f in (mirror_dir / "mnist").glob("*-ubyte.gz"):
        server.routes[f"/mnist/{f.name}"] = [(200, f.read_bytes())]
    monkeypatch.setenv("DESCEND_MIRROR", server.url)
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path / "cache"))
    ds = load("mnist", validation=0)
    assert len(ds.train) == 60000 and len(ds.test) == 10000 and ds.validation is None
    assert sorted(server.hits) == sorted(f"/mnist/{f}" for f in (
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))
    assert ds.source == str(tmp_path / "cache" / "mnist")


def test_fer2013_by_name_without_a_mirror_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("DESCEND_MIRROR", raising=False)
    monkeypatch.setenv("DESCEND_CACHE", str(tmp_path))
    with pytest.raises(DownloadError, match="no source to try: set DESCEND_MIRROR"):
        load("fer2013")
    monkeypatch.setenv("DESCEND_MIRROR", str(tmp_path / "empty"))
    with pytest.raises(DownloadError, match=r"empty/fer2013/fer2013\.csv\.gz \(not found\)"):
        load("fer2013")
