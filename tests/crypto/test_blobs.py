"""Blob stores: one behavioural suite for both backends, then backend specifics."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from protect.crypto import blobs
from protect.crypto.blobs import (
    PART_SIZE,
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobTooLarge,
    InvalidBlobId,
    LocalBlobStore,
    S3BlobStore,
    StorageFull,
    StorageUnavailable,
    blob_store_from_url,
)

MiB = 1024 * 1024


def leftovers(store: BlobStore) -> list[str]:
    """What an unfinished write could leave: temp files or incomplete multipart uploads."""
    if isinstance(store, LocalBlobStore):
        return sorted(os.listdir(store.tmp))
    assert isinstance(store, S3BlobStore)
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [u["Key"] for u in uploads]


def assert_empty(store: BlobStore) -> None:
    assert list(store.ids()) == []
    assert leftovers(store) == []


def is_multipart(store: S3BlobStore, blob_id: str) -> bool:
    # A completed multipart upload's ETag ends in "-<part count>".
    etag = store.client.head_object(Bucket=store.bucket, Key=store.key(blob_id))["ETag"]
    return "-" in etag


class FailingSource(io.RawIOBase):
    """A source that yields some bytes, then breaks like a dropped client upload."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"z" * n
        self.left -= n
        return n


# --- behaviour shared by both stores -------------------------------------------

@pytest.mark.parametrize("size", [0, 1000, 20 * MiB], ids=["empty", "small", "20MiB"])
def test_put_open_round_trip(blob_store: BlobStore, size: int) -> None:
    data = os.urandom(size)
    blob_id = blob_store.put(io.BytesIO(data))

    with blob_store.open(blob_id) as f:
        got = f.read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert blob_store.size(blob_id) == size
    assert blob_store.exists(blob_id)
    assert list(blob_store.ids()) == [blob_id]
    assert leftovers(blob_store) == []
    if isinstance(blob_store, S3BlobStore):
        assert is_multipart(blob_store, blob_id) == (size > PART_SIZE)


def test_exactly_one_part_is_a_single_put(blob_store: BlobStore) -> None:
    blob_id = blob_store.put(io.BytesIO(b"p" * PART_SIZE))
    assert blob_store.size(blob_id) == PART_SIZE
    if isinstance(blob_store, S3BlobStore):
        assert not is_multipart(blob_store, blob_id)


def test_open_streams_in_pieces(blob_store: BlobStore) -> None:
    data = os.urandom(300_000)
    blob_id = blob_store.put(io.BytesIO(data))

    pieces = []
    with blob_store.open(blob_id) as f:
        assert f.readable()
        assert f.read(10) == data[:10]
        while piece := f.read(4096):
            assert len(piece) <= 4096
            pieces.append(piece)
    assert data[:10] + b"".join(pieces) == data


def test_writer_accepts_any_bytes_like(blob_store: BlobStore) -> None:
    with blob_store.writer() as w:
        assert w.write(b"ab") == 2
        assert w.write(bytearray(b"cd")) == 2
        assert w.write(memoryview(b"xefx")[1:3]) == 2
        w.writelines([b"g", b"h"])
        assert w.size == 8
    assert w.closed
    with blob_store.open(w.blob_id) as f:
        assert f.read() == b"abcdefgh"


def test_blob_invisible_until_commit(blob_store: BlobStore) -> None:
    w = blob_store.writer()
    w.write(b"secret")
    assert not blob_store.exists(w.blob_id)
    assert list(blob_store.ids()) == []
    with pytest.raises(BlobNotFound):
        blob_store.open(w.blob_id)

    w.commit()
    assert w.closed
    assert blob_store.size(w.blob_id) == 6
    assert leftovers(blob_store) == []


def test_writer_with_given_id(blob_store: BlobStore) -> None:
    blob_id = blob_store.new_id()
    with blob_store.writer(blob_id) as w:
        w.write(b"x")
    assert w.blob_id == blob_id
    assert blob_store.exists(blob_id)


def test_commit_replaces_existing_blob(blob_store: BlobStore) -> None:
    blob_id = blob_store.put(io.BytesIO(b"old"))
    assert blob_store.put(io.BytesIO(b"newer"), blob_id) == blob_id
    with blob_store.open(blob_id) as f:
        assert f.read() == b"newer"
    assert list(blob_store.ids()) == [blob_id]


@pytest.mark.parametrize("size", [10, PART_SIZE + 1], ids=["small", "multipart"])
def test_exception_in_with_block_leaves_nothing(blob_store: BlobStore, size: int) -> None:
    with pytest.raises(RuntimeError):
        with blob_store.writer() as w:
            w.write(b"q" * size)
            raise RuntimeError("encryption failed")
    assert w.closed
    assert not blob_store.exists(w.blob_id)
    assert_empty(blob_store)


def test_failing_source_leaves_nothing(blob_store: BlobStore) -> None:
    with pytest.raises(ConnectionResetError):
        blob_store.put(io.BufferedReader(FailingSource(PART_SIZE + 100_000)))
    assert_empty(blob_store)


def test_abort_is_idempotent_and_closes(blob_store: BlobStore) -> None:
    w = blob_store.writer()
    w.write(b"partial")
    w.abort()
    w.abort()
    w.close()
    assert_empty(blob_store)
    with pytest.raises(ValueError):
        w.write(b"more")
    with pytest.raises(ValueError):
        w.commit()


def test_close_without_commit_discards(blob_store: BlobStore) -> None:
    w = blob_store.writer()
    w.write(b"partial")
    w.close()
    assert not blob_store.exists(w.blob_id)
    assert_empty(blob_store)


def test_max_bytes_allows_exactly_the_limit(blob_store: BlobStore) -> None:
    blob_id = blob_store.put(io.BytesIO(b"1234567890"), max_bytes=10)
    assert blob_store.size(blob_id) == 10


def test_max_bytes_exceeded_leaves_nothing(blob_store: BlobStore) -> None:
    w = blob_store.writer(max_bytes=10)
    w.write(b"123456")
    with pytest.raises(BlobTooLarge):
        w.write(b"78901")
    assert w.closed
    assert not blob_store.exists(w.blob_id)
    assert_empty(blob_store)


def test_max_bytes_exceeded_after_parts_were_sent(blob_store: BlobStore) -> None:
    # On S3 the first part is already uploaded when the limit trips, so the
    # multipart upload itself must be aborted.
    with pytest.raises(BlobTooLarge):
        blob_store.put(io.BytesIO(os.urandom(12 * MiB)), max_bytes=9 * MiB)
    assert_empty(blob_store)


def test_delete_is_idempotent(blob_store: BlobStore) -> None:
    blob_id = blob_store.put(io.BytesIO(b"data"))
    blob_store.delete(blob_id)
    blob_store.delete(blob_id)
    blob_store.delete(blob_store.new_id())
    assert not blob_store.exists(blob_id)
    with pytest.raises(BlobNotFound):
        blob_store.open(blob_id)
    with pytest.raises(BlobNotFound):
        blob_store.size(blob_id)


def test_missing_blob(blob_store: BlobStore) -> None:
    blob_id = blob_store.new_id()
    assert not blob_store.exists(blob_id)
    with pytest.raises(BlobNotFound):
        blob_store.open(blob_id)
    with pytest.raises(BlobNotFound):
        blob_store.size(blob_id)


def test_exists_size_ids(blob_store: BlobStore) -> None:
    sizes = {blob_store.put(io.BytesIO(b"x" * n)): n for n in (0, 1, 70_000)}
    assert set(blob_store.ids()) == set(sizes)
    for blob_id, n in sizes.items():
        assert blob_store.exists(blob_id)
        assert blob_store.size(blob_id) == n


def test_orphans(blob_store: BlobStore) -> None:
    a, b, c = (blob_store.put(io.BytesIO(b"x")) for _ in range(3))
    unfinished = blob_store.writer()
    unfinished.write(b"not committed")
    assert set(blob_store.orphans({a, blob_store.new_id()})) == {b, c}
    assert list(blob_store.orphans({a, b, c})) == []
    unfinished.abort()


def test_new_id_is_random_hex() -> None:
    ids = {BlobStore.new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and i == i.lower() and int(i, 16) >= 0 for i in ids)


BAD_IDS = [
    "", "../x", "/etc/passwd", "a/b", "..", ".", "A" * 32, "a" * 31, "a" * 33, "g" * 32,
    "0" * 32 + "\n", "0" * 30 + "/x", "0" * 16 + "%2f" + "0" * 13, 12345,
]
OPERATIONS: dict[str, Callable[[BlobStore, Any], object]] = {
    "writer": lambda s, i: s.writer(i),
    "put": lambda s, i: s.put(io.BytesIO(b"x"), i),
    "open": lambda s, i: s.open(i),
    "delete": lambda s, i: s.delete(i),
    "exists": lambda s, i: s.exists(i),
    "size": lambda s, i: s.size(i),
}


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_invalid_ids_rejected(blob_store: BlobStore, bad_id: Any) -> None:
    for name, operation in OPERATIONS.items():
        with pytest.raises(InvalidBlobId):
            operation(blob_store, bad_id)
            pytest.fail(f"{name} accepted {bad_id!r}")
    assert_empty(blob_store)


# --- local store ---------------------------------------------------------------

@pytest.fixture
def local_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_local_layout_and_modes(local_store: LocalBlobStore) -> None:
    w = local_store.writer()
    w.write(b"x")
    (temp,) = local_store.tmp.iterdir()
    assert mode(temp) == 0o600
    w.commit()

    path = local_store.root / w.blob_id[:2] / w.blob_id
    assert path.read_bytes() == b"x"
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(local_store.root) == 0o700
    assert mode(local_store.tmp) == 0o700


def test_local_symlinked_fan_out_dir_is_refused(local_store: LocalBlobStore,
                                                tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    blob_id = "ab" + "0" * 30
    victim = outside / blob_id
    victim.write_bytes(b"not yours")
    (local_store.root / "ab").symlink_to(outside)

    for operation in (local_store.open, local_store.delete, local_store.exists,
                      local_store.size):
        with pytest.raises(BlobError):
            operation(blob_id)
    with pytest.raises(BlobError):
        local_store.put(io.BytesIO(b"overwrite"), blob_id)
    assert victim.read_bytes() == b"not yours"
    assert sorted(os.listdir(outside)) == [blob_id]
    assert_empty(local_store)


def test_local_symlinked_blob_is_not_followed(local_store: LocalBlobStore,
                                              tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours")
    blob_id = local_store.put(io.BytesIO(b"mine"))
    linked_id = blob_id[:2] + "1" * 30  # same fan-out directory as blob_id
    link = local_store.root / blob_id[:2] / linked_id
    link.symlink_to(victim)

    assert not local_store.exists(linked_id)
    with pytest.raises(BlobNotFound):
        local_store.open(linked_id)
    with pytest.raises(BlobNotFound):
        local_store.size(linked_id)
    assert list(local_store.ids()) == [blob_id]
    local_store.delete(linked_id)
    assert not link.is_symlink()
    assert victim.read_bytes() == b"not yours"


def test_local_clear_temporaries(local_store: LocalBlobStore) -> None:
    kept = local_store.put(io.BytesIO(b"committed"))
    stale, fresh = local_store.writer(), local_store.writer()
    stale.write(b"left by a killed process")
    fresh.write(b"upload in progress")
    (local_store.tmp / "README").write_text("not ours")
    (stale_file,) = local_store.tmp.glob(f"{stale.blob_id}.*.tmp")
    two_hours_ago = time.time() - 7200
    os.utime(stale_file, (two_hours_ago, two_hours_ago))

    assert local_store.clear_temporaries(timedelta(hours=3)) == 0
    assert local_store.clear_temporaries(timedelta(hours=1)) == 1
    assert not stale_file.exists()
    assert len(list(local_store.tmp.glob(f"{fresh.blob_id}.*.tmp"))) == 1
    assert (local_store.tmp / "README").exists()
    assert list(local_store.ids()) == [kept]

    stale.abort()  # its temporary is already gone; must not fail
    fresh.commit()
    assert set(local_store.ids()) == {kept, fresh.blob_id}


def enospc(*args: Any) -> int:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_local_disk_full_while_writing(local_store: LocalBlobStore,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = 0

    def half_then_full(fd: int, data: Any) -> int:
        # Like a real disk filling up: some bytes land, then ENOSPC.
        nonlocal calls
        calls += 1
        return real_write(fd, data[: len(data) // 2]) if calls == 1 else enospc()

    w = local_store.writer()
    w.write(b"a" * 1000)
    with monkeypatch.context() as m:
        m.setattr(os, "write", half_then_full)
        with pytest.raises(StorageFull):
            w.write(b"b" * 1000)
    assert w.closed
    assert_empty(local_store)


def test_local_disk_full_during_put(local_store: LocalBlobStore,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(os, "write", enospc)
        with pytest.raises(StorageFull):
            local_store.put(io.BytesIO(b"x" * 200_000))
    assert_empty(local_store)


def test_local_disk_full_at_commit(local_store: LocalBlobStore,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    w = local_store.writer()
    w.write(b"x" * 1000)
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", enospc)
        with pytest.raises(StorageFull):
            w.commit()
    assert not local_store.exists(w.blob_id)
    assert_empty(local_store)


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_local_writer_hands_written_stretches_to_writeback(local_store: LocalBlobStore,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((offset // MiB, length // MiB, advice))
        os.posix_fadvise(fd, offset, length, advice)

    monkeypatch.setattr(blobs, "_fadvise", record)
    data = os.urandom(26 * MiB + 5)
    with local_store.writer() as w:
        for i in range(0, len(data), MiB):
            w.write(data[i : i + MiB])
    # Each new 8 MiB stretch goes to writeback as soon as it is written.
    assert calls == [(0, 8, os.POSIX_FADV_DONTNEED), (8, 8, os.POSIX_FADV_DONTNEED),
                     (16, 8, os.POSIX_FADV_DONTNEED)]
    with local_store.open(w.blob_id) as f:
        assert f.read() == data


def einval(*args: Any) -> None:
    raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))


@pytest.mark.parametrize("fadvise", [None, einval], ids=["missing", "failing"])
def test_local_writer_works_without_writeback_advice(local_store: LocalBlobStore,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     fadvise: Any) -> None:
    monkeypatch.setattr(blobs, "_fadvise", fadvise)
    data = os.urandom(20 * MiB)
    blob_id = local_store.put(io.BytesIO(data))
    with local_store.open(blob_id) as f:
        assert f.read() == data
    assert leftovers(local_store) == []


# --- S3 store ------------------------------------------------------------------

@pytest.fixture
def s3_store(s3_bucket: str, moto_server: str) -> S3BlobStore:
    store = blob_store_from_url(f"s3://{s3_bucket}/blobs", endpoint_url=moto_server)
    assert isinstance(store, S3BlobStore)
    return store


def test_s3_keys_live_under_the_prefix(s3_store: S3BlobStore, s3_client: Any) -> None:
    blob_id = s3_store.put(io.BytesIO(b"x"))
    for foreign in ("blobs/readme.txt", "other/" + blob_id, "blobs/sub/" + blob_id):
        s3_client.put_object(Bucket=s3_store.bucket, Key=foreign, Body=b"")
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_store.bucket)["Contents"]]
    assert f"blobs/{blob_id}" in keys
    assert list(s3_store.ids()) == [blob_id]


def test_s3_clear_temporaries_aborts_stale_uploads(s3_store: S3BlobStore, s3_client: Any) -> None:
    w = s3_store.writer()
    w.write(b"m" * (PART_SIZE + 1))  # a full part was sent: a multipart upload is open
    foreign = s3_client.create_multipart_upload(Bucket=s3_store.bucket, Key="other/file")
    assert leftovers(s3_store) == [f"blobs/{w.blob_id}", "other/file"]

    # moto reports every upload as initiated on 2010-11-10, so "fresh" here
    # means a cutoff further back than that.
    assert s3_store.clear_temporaries(timedelta(days=365 * 100)) == 0
    assert s3_store.clear_temporaries(timedelta(hours=1)) == 1
    assert leftovers(s3_store) == ["other/file"]

    w.abort()  # its upload is already gone; must not fail
    assert not s3_store.exists(w.blob_id)
    s3_client.abort_multipart_upload(Bucket=s3_store.bucket, Key="other/file",
                                     UploadId=foreign["UploadId"])


UNREACHABLE_OPERATIONS: dict[str, Callable[[BlobStore], object]] = {
    "put": lambda s: s.put(io.BytesIO(b"x")),
    "put-multipart": lambda s: s.put(io.BytesIO(b"x" * (PART_SIZE + 1))),
    "open": lambda s: s.open(s.new_id()),
    "exists": lambda s: s.exists(s.new_id()),
    "size": lambda s: s.size(s.new_id()),
    "delete": lambda s: s.delete(s.new_id()),
    "ids": lambda s: list(s.ids()),
    "clear_temporaries": lambda s: s.clear_temporaries(timedelta(hours=1)),
}


@pytest.mark.parametrize("operation", UNREACHABLE_OPERATIONS)
def test_s3_unreachable_endpoint(closed_port_url: str, aws_credentials: None,
                                 operation: str) -> None:
    store = blob_store_from_url("s3://bucket/blobs", endpoint_url=closed_port_url)
    with pytest.raises(StorageUnavailable):
        UNREACHABLE_OPERATIONS[operation](store)


def test_s3_unreachable_writer_closes(closed_port_url: str, aws_credentials: None) -> None:
    store = blob_store_from_url("s3://bucket/blobs", endpoint_url=closed_port_url)
    w = store.writer()
    with pytest.raises(StorageUnavailable):
        w.write(b"x" * (PART_SIZE + 1))
    assert w.closed


# --- factory -------------------------------------------------------------------

def test_factory_local(tmp_path: Path) -> None:
    for url in (f"file://{tmp_path}/a", str(tmp_path / "b"), f"file://localhost{tmp_path}/c"):
        store = blob_store_from_url(url)
        assert isinstance(store, LocalBlobStore)
        assert store.root == Path(url.removeprefix("file://").removeprefix("localhost")).resolve()


def test_factory_s3(aws_credentials: None) -> None:
    store = blob_store_from_url("s3://bucket/some/prefix/", endpoint_url="http://127.0.0.1:9",
                                region="eu-west-3")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("bucket", "some/prefix")
    assert store.client.meta.region_name == "eu-west-3"
    assert store.key("0" * 32) == "some/prefix/" + "0" * 32

    bare = blob_store_from_url("s3://bucket")
    assert isinstance(bare, S3BlobStore)
    assert bare.key("0" * 32) == "0" * 32
    assert bare.client.meta.region_name == "us-east-1"


@pytest.mark.parametrize("url, kwargs", [
    ("ftp://host/x", {}),
    ("s3:///prefix", {}),
    ("file://otherhost/x", {}),
    ("", {}),
    ("/tmp/blobs", {"endpoint_url": "http://127.0.0.1:9"}),
    ("/tmp/blobs", {"region": "eu-west-3"}),
])
def test_factory_rejects(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        blob_store_from_url(url, **kwargs)
