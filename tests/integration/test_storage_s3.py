"""mpa.storage against a real S3 server (SeaweedFS): listing, multipart, verification, errors."""

from __future__ import annotations

import os
import uuid

import pytest

from mpa import storage
from mpa.data.sources import list_images

pytestmark = pytest.mark.integration


def _prefix(name: str) -> str:
    return f"s3://mpa/{name}-{uuid.uuid4().hex[:8]}"


def test_dir_roundtrip_listing_pagination_and_suffixes(s3_env, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        (src / f"img{i}.PNG").write_bytes(os.urandom(100 + i))
    (src / "sub" / "notes.txt").write_text("not an image")
    (src / "sub" / "deep.jpg").write_bytes(b"x" * 10)
    prefix = _prefix("roundtrip")
    assert storage.upload_dir(src, prefix, state_file=tmp_path / "state.json") == 7
    # unchanged files are not sent again
    assert storage.upload_dir(src, prefix, state_file=tmp_path / "state.json") == 0
    # pagination: 2 keys per page, all 7 found
    assert len(storage.list_s3(prefix + "/", page_size=2)) == 7
    imgs = list_images(prefix + "/")
    assert len(imgs) == 6 and all(u.startswith(prefix) for u in imgs) and not any(u.endswith(".txt") for u in imgs)
    assert list_images(prefix + "/", max_images=2) == imgs[:2]
    dst = tmp_path / "dst"
    assert storage.download_dir(prefix, dst) == 7
    for p in src.rglob("*"):
        if p.is_file():
            assert (dst / p.relative_to(src)).read_bytes() == p.read_bytes()
    # the same API on local paths
    assert storage.list_files(dst, (".png",)) == sorted(str(p) for p in dst.glob("*.PNG"))


def test_multipart_upload_is_verified_and_download_checks_sha(s3_env, tmp_path):
    storage.configure(multipart_threshold_mb=5, multipart_chunk_mb=5)
    big = tmp_path / "model.safetensors"
    big.write_bytes(os.urandom(12 * 1024 * 1024 + 123))
    uri = _prefix("multipart") + "/model.safetensors"
    info = storage.upload_file(big, uri)
    assert info["etag"].endswith("-3"), info  # 3 parts of 5 MB
    assert storage.head(uri)["Metadata"]["sha256"] == storage.file_sha256(big)
    back = storage.download_file(uri, tmp_path / "back.bin")
    assert back.read_bytes() == big.read_bytes()


def test_clear_errors_missing_bucket_missing_key_wrong_credentials(s3_env, monkeypatch):
    endpoint = s3_env.endpoint
    with pytest.raises(storage.BucketNotFound, match="bucket 'no-such-bucket' does not exist") as e:
        storage.read_bytes("s3://no-such-bucket/x.json")
    assert endpoint in str(e.value)
    with pytest.raises(storage.BucketNotFound):
        storage.list_s3("s3://no-such-bucket/prefix/")
    with pytest.raises(storage.ObjectNotFound, match="no such object") as e2:
        storage.read_bytes("s3://mpa/definitely/missing.json")
    assert isinstance(e2.value, FileNotFoundError)
    assert not storage.exists("s3://mpa/definitely/missing.json")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    storage.reset_clients()
    with pytest.raises(storage.AccessDenied, match="rejected the credentials"):
        storage.check_bucket("s3://mpa/anything", write=True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key")
    storage.reset_clients()
    with pytest.raises(storage.AccessDenied, match="InvalidAccessKeyId"):
        storage.read_bytes("s3://mpa/x")


def test_engine_loads_a_checkpoint_from_s3(s3_env, tiny_ws, tmp_path, monkeypatch):
    from mpa.config import ModelConfig
    from mpa.vlm import GenParams, VLMRequest, load_vlm

    monkeypatch.setenv("MPA_CACHE", str(tmp_path / "cache"))
    prefix = _prefix("ckpt")
    storage.copy_dir(tiny_ws["student"], prefix)
    vlm = load_vlm(ModelConfig(model=prefix, batch_size=2))
    from PIL import Image

    out = vlm.generate([VLMRequest(Image.new("RGB", (56, 56), "red"), "What color?")],
                       GenParams(max_new_tokens=2, temperature=0.0))
    assert len(out) == 1
    vlm.close()
