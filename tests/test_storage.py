"""mpa.storage without a real object server: local paths, retries/backoff on a flaky HTTP stub, errors."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mpa import storage


@pytest.fixture
def fake_s3(monkeypatch):
    """A tiny HTTP server speaking just enough S3 to answer GET/HEAD with scripted failures."""
    script: list[tuple[int, str]] = []
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _reply(self, body: bool) -> None:
            calls.append(self.path)
            status, code = script.pop(0) if script else (200, "")
            if status == 200:
                data = b"payload"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
                self.end_headers()
                if body:
                    self.wfile.write(data)
                return
            err = f"<Error><Code>{code}</Code><Message>scripted</Message></Error>".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(err)))
            self.end_headers()
            if body:
                self.wfile.write(err)

        def do_GET(self):
            self._reply(True)

        def do_HEAD(self):
            self._reply(False)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage.configure(max_attempts=3)
    storage.reset_clients()
    yield script, calls
    server.shutdown()
    storage.configure()
    storage.reset_clients()


def test_retries_with_backoff_on_throttling_and_5xx(fake_s3):
    script, calls = fake_s3
    script[:] = [(503, "SlowDown"), (500, "InternalError")]
    assert storage.read_bytes("s3://bkt/obj.json") == b"payload"
    assert len(calls) == 3


def test_gives_up_after_max_attempts_with_a_clear_error(fake_s3):
    script, calls = fake_s3
    script[:] = [(503, "SlowDown")] * 5
    with pytest.raises(storage.StorageUnavailable, match="kept failing .*after retries"):
        storage.read_bytes("s3://bkt/obj.json")
    assert len(calls) >= 3  # max_attempts per call (the S3 client may add one redirect probe)


def test_access_denied_and_missing_are_not_retried(fake_s3):
    script, calls = fake_s3
    script[:] = [(403, "AccessDenied")]
    with pytest.raises(storage.AccessDenied, match="access denied"):
        storage.read_bytes("s3://bkt/obj.json")
    script[:] = [(404, "NoSuchKey")]
    with pytest.raises(FileNotFoundError, match="s3://bkt/missing"):
        storage.read_bytes("s3://bkt/missing")
    script[:] = [(404, "NoSuchBucket")]
    with pytest.raises(storage.BucketNotFound, match="bucket 'nob' does not exist"):
        storage.read_bytes("s3://nob/x")
    assert len(calls) == 3


def test_unreachable_endpoint_names_it(monkeypatch):
    from mpa.devtools.services import free_ports

    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage.configure(max_attempts=1)
    storage.reset_clients()
    try:
        with pytest.raises(storage.StorageUnavailable, match="unreachable") as exc:
            storage.list_s3("s3://bkt/prefix/")
        assert endpoint in str(exc.value)
    finally:
        storage.configure()
        storage.reset_clients()


def test_local_paths_use_the_same_api(tmp_path):
    storage.write_bytes(tmp_path / "a" / "x.txt", b"hello")
    assert storage.read_text(tmp_path / "a" / "x.txt") == "hello"
    assert storage.exists(tmp_path / "a" / "x.txt") and not storage.exists(tmp_path / "nope")
    storage.copy(tmp_path / "a" / "x.txt", tmp_path / "b" / "y.txt")
    storage.copy_dir(tmp_path / "a", tmp_path / "c")
    assert storage.list_files(tmp_path, (".txt",)) == sorted(
        str(p) for p in (tmp_path / "a" / "x.txt", tmp_path / "b" / "y.txt", tmp_path / "c" / "x.txt"))
    assert storage.join("s3://b/p/", "q", "r.json") == "s3://b/p/q/r.json"
    assert storage.join(tmp_path, "q") == str(tmp_path / "q")
    with pytest.raises(ValueError, match="no bucket"):
        storage.split_s3("s3:///key")


def test_expected_etag_single_and_multipart(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 100
    p.write_bytes(data)
    assert storage.expected_etag(p, threshold=1 << 20, chunk=1 << 20) == hashlib.md5(data).hexdigest()
    parts = [hashlib.md5(data[i:i + 10000]).digest() for i in range(0, len(data), 10000)]
    assert storage.expected_etag(p, threshold=100, chunk=10000) == \
        f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"
