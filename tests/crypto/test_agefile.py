"""Tests of protect.crypto.agefile: round trips, interop with the age CLI, rejections."""

from __future__ import annotations

import io
import os
import random
import select
import shutil
import signal
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protect.crypto import agefile
from protect.crypto.agefile import (
    CHUNK,
    ENC_CHUNK,
    ArmorError,
    BadPassphrase,
    ChunkError,
    HeaderError,
    KeyFormatError,
    NoIdentityMatch,
    TruncatedError,
    TruncatedOrAlteredError,
)

# CI installs age; without it the interop tests must fail, not skip.
AGE = shutil.which("age") or "age"
AGE_KEYGEN = shutil.which("age-keygen") or "age-keygen"
SK, PK = agefile.generate_identity()
SK2, PK2 = agefile.generate_identity()
PASSPHRASE = "correct horse battery staple"
# Low enough for quick tests; the CLI's files use its default of 18.
TEST_WORK_FACTOR = 12
INTEROP_WORK_FACTOR = 14
SIZES = [0, 1, 65535, 65536, 65537, 10 * 1024 * 1024]
TIMEOUT = 120


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 1000 + seed).randbytes(size)


def enc(data: bytes, recipients: Sequence[str] = (PK,), **kw: object) -> bytes:
    out = io.BytesIO()
    agefile.encrypt(io.BytesIO(data), out, list(recipients), **kw)
    return out.getvalue()


def dec(blob: bytes, identities: Sequence[str] = (SK,), **kw: object) -> bytes:
    out = io.BytesIO()
    agefile.decrypt(io.BytesIO(blob), out, list(identities), **kw)
    return out.getvalue()


def payload_start(blob: bytes) -> int:
    """Offset of the first chunk (after header and nonce) in a binary file."""
    return agefile.read_header(io.BytesIO(blob)).payload_offset + agefile.NONCE_SIZE


def age(*args: str) -> bytes:
    return subprocess.run([AGE, *args], check=True, capture_output=True, timeout=TIMEOUT).stdout


def age_output(path: Path) -> bytes:
    """age creates its -o file on first write, so an empty plaintext leaves none."""
    return path.read_bytes() if path.exists() else b""


def keyfile(tmp_path: Path, identity: str = SK) -> str:
    path = tmp_path / "key.txt"
    path.write_text(f"# test key\n{identity}\n")
    return str(path)


class TTYAge:
    """age (or a shell running age) with a pseudo-terminal as controlling terminal.

    age reads passphrases only from a terminal.  They are typed ahead: age
    switches off echo without flushing input, so each prompt reads the next
    line, and nothing has to answer prompts while the test does other work.
    """

    def __init__(self, argv: list[str], answers: int) -> None:
        self.master, slave = os.openpty()
        # setsid -c makes the pty the controlling terminal without a preexec_fn.
        self.proc = subprocess.Popen(["setsid", "-c", *argv], stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        os.write(self.master, (PASSPHRASE + "\n").encode() * answers)

    def screen(self) -> bytes:
        text = b""
        while self.master >= 0 and select.select([self.master], [], [], 0)[0]:
            try:
                text += os.read(self.master, 4096)
            except OSError:  # EIO once no process holds the terminal
                break
        return text

    def wait(self) -> None:
        try:
            rc = self.proc.wait(TIMEOUT)
            assert rc == 0, self.screen()
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(TIMEOUT)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


# --- keys ------------------------------------------------------------------


def test_generated_identity_matches_age_keygen(tmp_path: Path) -> None:
    recipient = subprocess.run(
        [AGE_KEYGEN, "-y", keyfile(tmp_path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert recipient == PK == agefile.recipient_of(SK)
    assert SK.startswith("AGE-SECRET-KEY-1") and SK.isupper()
    assert PK.startswith("age1") and PK.islower()


def test_spec_example_identity_and_age_keygen_file(tmp_path: Path) -> None:
    spec_identity = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
    path = keyfile(tmp_path, spec_identity)
    expected = subprocess.run(
        [AGE_KEYGEN, "-y", path], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert agefile.recipient_of(spec_identity) == expected

    generated = tmp_path / "generated.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(generated)], check=True, capture_output=True)
    text = generated.read_text()
    assert text.startswith("# created:")
    [identity] = agefile.parse_identities(text + "\n\n# another comment\n")
    assert agefile.recipient_of(identity) in text


@pytest.mark.parametrize(
    "bad",
    [
        PK[:-1] + ("q" if PK[-1] != "q" else "p"),  # checksum
        PK[:10] + ("q" if PK[10] != "q" else "p") + PK[11:],  # checksum
        PK.upper(),  # age recipients are lowercase
        PK[:5] + PK[5:].upper(),  # mixed case
        SK,  # an identity is not a recipient
        "age1" + "q" * 58,
        "age1qqqqqq",
        "not a key",
        "",
    ],
    ids=["checksum-end", "checksum-middle", "uppercase", "mixed-case", "identity", "zeros", "short", "text", "empty"],
)
def test_malformed_recipient(bad: str) -> None:
    with pytest.raises(KeyFormatError):
        enc(b"x", [bad])


@pytest.mark.parametrize(
    "bad",
    [
        SK[:-1] + ("Q" if SK[-1] != "Q" else "P"),  # checksum
        SK.lower(),  # identities are uppercase
        PK,
        "AGE-SECRET-KEY-1" + "Q" * 58,
    ],
    ids=["checksum", "lowercase", "recipient", "zeros"],
)
def test_malformed_identity(bad: str) -> None:
    blob = enc(b"x")
    with pytest.raises(KeyFormatError, match="(?i)bech32|identity"):
        dec(blob, [bad])
    with pytest.raises(KeyFormatError):
        agefile.parse_identities(f"# comment\n{bad}\n")


def test_bad_checksum_is_named() -> None:
    with pytest.raises(KeyFormatError, match="checksum"):
        agefile.recipient_of(SK[:-1] + ("Q" if SK[-1] != "Q" else "P"))


# --- round trips -----------------------------------------------------------


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize("n_recipients", [1, 3])
def test_roundtrip_x25519(armor: bool, n_recipients: int) -> None:
    pairs = [(SK, PK), (SK2, PK2)] + [agefile.generate_identity() for _ in range(n_recipients - 2)]
    pairs = pairs[:n_recipients]
    data = data_of(3 * CHUNK + 17)
    blob = enc(data, [p for _, p in pairs], armor=armor)
    assert blob.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n" if armor else b"age-encryption.org/v1\n")
    assert agefile.read_header(io.BytesIO(blob)).armored is armor
    for secret, _ in pairs:
        assert dec(blob, [secret]) == data
    assert dec(blob, [agefile.generate_identity()[0], pairs[-1][0]]) == data


@pytest.mark.parametrize("armor", [False, True])
def test_roundtrip_passphrase(armor: bool) -> None:
    data = data_of(2 * CHUNK)
    blob = enc(data, [], passphrase=PASSPHRASE, armor=armor, scrypt_work_factor=TEST_WORK_FACTOR)
    [stanza] = agefile.read_header(io.BytesIO(blob)).stanzas
    assert stanza.type == "scrypt" and stanza.args[1] == str(TEST_WORK_FACTOR)
    assert dec(blob, [], passphrase=PASSPHRASE) == data


def test_default_work_factor_is_18_and_age_opens_it(tmp_path: Path) -> None:
    data = data_of(10 * 1024 * 1024, seed=1)
    blob = enc(data, [], passphrase=PASSPHRASE)
    [stanza] = agefile.read_header(io.BytesIO(blob)).stanzas
    assert stanza.args[1] == "18"
    src, out = tmp_path / "file.age", tmp_path / "out"
    src.write_bytes(blob)
    TTYAge([AGE, "-d", "-o", str(out), str(src)], answers=1).wait()
    assert age_output(out) == data


def test_streaming_objects_with_odd_sizes() -> None:
    data = data_of(5 * 1024 * 1024 + 12345)
    out = io.BytesIO()
    rng = random.Random(7)
    with agefile.open_encrypted(out, [PK]) as writer:
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 100, CHUNK - 1, CHUNK, 3 * 1024 * 1024])
            assert writer.write(data[pos : pos + step]) == len(data[pos : pos + step])
            pos += step
    assert not out.closed
    assert dec(out.getvalue()) == data

    got = bytearray()
    with agefile.open_decrypted(io.BytesIO(out.getvalue()), [SK]) as reader:
        assert reader.readable()
        while chunk := reader.read(rng.choice([1, 999, CHUNK + 1, 2 * 1024 * 1024])):
            got += chunk
    assert got == data
    assert agefile.open_decrypted(io.BytesIO(out.getvalue()), [SK]).read() == data


def test_exception_in_with_block_leaves_a_truncated_file() -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with agefile.open_encrypted(out, [PK]) as writer:
            writer.write(data_of(3 * 1024 * 1024))
            raise RuntimeError("upload interrupted")
    with pytest.raises(TruncatedError):
        dec(out.getvalue())


class FailingSink(io.RawIOBase):
    """Accepts limit bytes, then fails like a full disk."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:
        if len(b) > self.left:
            raise OSError(28, "No space left on device")
        self.left -= len(b)
        return len(b)


@pytest.mark.parametrize("limit", [100, 3 * 1024 * 1024])
def test_write_errors_reach_the_caller(limit: int) -> None:
    # Past the first block, writes happen on a helper thread: its errors must
    # still surface in the caller, from write() or close().
    with pytest.raises(OSError, match="No space"):
        with agefile.open_encrypted(FailingSink(limit), [PK]) as writer:
            for _ in range(8):
                writer.write(data_of(1024 * 1024))
    blob = enc(data_of(8 * 1024 * 1024))
    with pytest.raises(OSError, match="No space"):
        agefile.decrypt(io.BytesIO(blob), FailingSink(limit), [SK])


def test_closed_writer_refuses_writes() -> None:
    writer = agefile.open_encrypted(io.BytesIO(), [PK])
    writer.close()
    with pytest.raises(ValueError):
        writer.write(b"late")


@settings(max_examples=30, deadline=None)
@given(
    blocks=st.integers(min_value=0, max_value=34),
    delta=st.integers(min_value=-2, max_value=2),
    seed=st.integers(min_value=0, max_value=2**32),
    write_size=st.sampled_from([1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 1024 * 1024, 1024 * 1024 + 1]),
    armor=st.booleans(),
)
def test_property_roundtrip_across_chunk_boundaries(
    blocks: int, delta: int, seed: int, write_size: int, armor: bool
) -> None:
    size = max(0, blocks * CHUNK + delta)
    data = random.Random(seed).randbytes(size)
    out = io.BytesIO()
    with agefile.open_encrypted(out, [PK], armor=armor) as writer:
        for i in range(0, size, write_size):
            writer.write(data[i : i + write_size])
    blob = out.getvalue()
    if not armor:
        chunks = max(1, -(-size // CHUNK))
        assert len(blob) == payload_start(blob) + size + 16 * chunks
    assert dec(blob) == data


# Sizes and write sizes where whole chunks, and whole blocks, are sealed straight
# from the caller's buffer, the last one held back until close().
WRITE_PATTERNS = [
    (2 * 1024 * 1024, [1024 * 1024]),
    (3 * 1024 * 1024 + 12345, [1, CHUNK - 1, 16 * CHUNK + 1, 3 * CHUNK, 2 * 1024 * 1024]),
    (33 * CHUNK, [CHUNK]),
    (5 * CHUNK + 7, [5 * CHUNK + 7]),
]


def write_in_pieces(out: io.BytesIO, data: bytes, steps: list[int], **kw: Any) -> None:
    view = memoryview(data)
    with agefile.open_encrypted(out, [PK], **kw) as writer:
        pos, i = 0, 0
        while pos < len(data):
            writer.write(view[pos : pos + steps[i % len(steps)]])
            pos += steps[i % len(steps)]
            i += 1


@pytest.mark.parametrize(("size", "steps"), WRITE_PATTERNS)
def test_writer_output_is_byte_for_byte_that_of_encrypt(
    size: int, steps: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same file key and payload nonce for both: the payloads must be identical.
    monkeypatch.setattr(agefile.os, "urandom", lambda n: bytes(range(n)))
    data = data_of(size)
    streamed = io.BytesIO()
    write_in_pieces(streamed, data, steps)
    whole = enc(data)

    def payload(blob: bytes) -> bytes:
        return blob[agefile.read_header(io.BytesIO(blob)).payload_offset :]

    assert payload(streamed.getvalue()) == payload(whole)
    assert dec(streamed.getvalue()) == data


class Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:
        return len(b)


def test_encryption_memory_is_bounded() -> None:
    block = memoryview(os.urandom(3 * 1024 * 1024))
    sizes = [1, CHUNK, 3 * 1024 * 1024, 777_777, CHUNK + 1]
    tracemalloc.start()
    try:
        written = 0
        with agefile.open_encrypted(Discard(), [PK]) as writer:
            i = 0
            while written < 64 * 1024 * 1024:
                n = sizes[i % len(sizes)]
                writer.write(block[:n])
                written += n
                i += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak


# --- interop with the age CLI ----------------------------------------------


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_age_decrypts_x25519(tmp_path: Path, size: int, armor: bool) -> None:
    data = data_of(size)
    src = tmp_path / "file.age"
    with open(src, "wb") as f, io.BytesIO(data) as plain:
        agefile.encrypt(plain, f, [PK2, PK], armor=armor)
    out = tmp_path / "out"
    age("-d", "-i", keyfile(tmp_path), "-o", str(out), str(src))
    assert age_output(out) == data


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize(("size", "steps"), WRITE_PATTERNS)
def test_streamed_writes_age_decrypts(tmp_path: Path, size: int, steps: list[int], armor: bool) -> None:
    data = data_of(size)
    blob = io.BytesIO()
    write_in_pieces(blob, data, steps, armor=armor)
    src = tmp_path / "file.age"
    src.write_bytes(blob.getvalue())
    out = tmp_path / "out"
    age("-d", "-i", keyfile(tmp_path), "-o", str(out), str(src))
    assert age_output(out) == data


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_age_encrypts_we_decrypt_x25519(tmp_path: Path, size: int, armor: bool) -> None:
    data = data_of(size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    src = tmp_path / "file.age"
    age("-e", "-r", PK2, "-r", PK, *(["-a"] if armor else []), "-o", str(src), str(plain))
    with open(src, "rb") as f:
        assert f.read(5) == (b"-----" if armor else b"age-e")
        f.seek(0)
        out = io.BytesIO()
        agefile.decrypt(f, out, [SK])
    assert out.getvalue() == data


@pytest.mark.parametrize("armor", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_age_decrypts_passphrase(tmp_path: Path, size: int, armor: bool) -> None:
    data = data_of(size)
    src = tmp_path / "file.age"
    src.write_bytes(enc(data, [], passphrase=PASSPHRASE, armor=armor, scrypt_work_factor=INTEROP_WORK_FACTOR))
    out = tmp_path / "out"
    TTYAge([AGE, "-d", "-o", str(out), str(src)], answers=1).wait()
    assert age_output(out) == data


# --- rejections --------------------------------------------------------------


def read_until_error(blob: bytes) -> tuple[bytes, Exception]:
    got = bytearray()
    reader = agefile.open_decrypted(io.BytesIO(blob), [SK])
    try:
        while chunk := reader.read(10_000):
            got += chunk
    except agefile.AgeError as e:
        return bytes(got), e
    raise AssertionError("no error raised")


def assert_only_authenticated_prefix(got: bytes, data: bytes, bad_chunk: int) -> None:
    """What was released is whole chunks of plaintext from before the bad one."""
    assert len(got) % CHUNK == 0 and len(got) <= bad_chunk * CHUNK
    assert got == data[: len(got)]


BIG = 20 * CHUNK + 1000  # spans two blocks of 16 chunks, so a reader releases the first


def test_truncated_mid_chunk() -> None:
    data = data_of(BIG)
    blob = enc(data)
    start = payload_start(blob)
    for cut in (start + 18 * ENC_CHUNK + 5000, start + 18 * ENC_CHUNK + 3, start + 5, start - 3):
        with pytest.raises(TruncatedError):
            dec(blob[:cut])
    got, err = read_until_error(blob[: start + 18 * ENC_CHUNK + 5000])
    assert isinstance(err, TruncatedError)
    assert_only_authenticated_prefix(got, data, 18)
    assert got == data[: 16 * CHUNK]
    out = io.BytesIO()
    with pytest.raises(TruncatedError):
        agefile.decrypt(io.BytesIO(blob[: start + 18 * ENC_CHUNK + 5000]), out, [SK])
    assert_only_authenticated_prefix(out.getvalue(), data, 18)


def test_truncated_at_chunk_boundary() -> None:
    data = data_of(BIG)
    blob = enc(data)
    start = payload_start(blob)
    for chunks in (1, 16, 18, 20):
        with pytest.raises(TruncatedError) as info:
            dec(blob[: start + chunks * ENC_CHUNK])
        assert not isinstance(info.value, ChunkError)
    got, err = read_until_error(blob[: start + 18 * ENC_CHUNK])
    assert type(err) is TruncatedError
    assert_only_authenticated_prefix(got, data, 18)
    with pytest.raises(TruncatedError, match="no chunks"):
        dec(blob[:start])


def test_swapped_chunks() -> None:
    data = data_of(BIG)
    blob = bytearray(enc(data))
    start = payload_start(blob)
    a = slice(start + 17 * ENC_CHUNK, start + 18 * ENC_CHUNK)
    b = slice(start + 18 * ENC_CHUNK, start + 19 * ENC_CHUNK)
    blob[a], blob[b] = blob[b], blob[a]
    with pytest.raises(ChunkError) as info:
        dec(bytes(blob))
    assert not isinstance(info.value, TruncatedError)
    got, err = read_until_error(bytes(blob))
    assert isinstance(err, ChunkError)
    assert_only_authenticated_prefix(got, data, 17)


@pytest.mark.parametrize("where", [0, 17 * ENC_CHUNK + 100, 19 * ENC_CHUNK - 1])
def test_flipped_byte_in_chunk(where: int) -> None:
    data = data_of(BIG)
    blob = bytearray(enc(data))
    blob[payload_start(blob) + where] ^= 0x40
    with pytest.raises(ChunkError) as info:
        dec(bytes(blob))
    assert not isinstance(info.value, TruncatedError)
    got, err = read_until_error(bytes(blob))
    assert isinstance(err, ChunkError)
    assert_only_authenticated_prefix(got, data, where // ENC_CHUNK)


def test_flipped_byte_in_short_final_chunk_is_ambiguous() -> None:
    blob = bytearray(enc(data_of(CHUNK + 100)))
    blob[-1] ^= 1
    with pytest.raises(TruncatedOrAlteredError) as info:
        dec(bytes(blob))
    assert isinstance(info.value, ChunkError) and isinstance(info.value, TruncatedError)


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 100])
@pytest.mark.parametrize("extra", [b"\x00", os.urandom(ENC_CHUNK + 7)], ids=["byte", "chunk"])
def test_trailing_data(size: int, extra: bytes) -> None:
    blob = enc(data_of(size)) + extra
    with pytest.raises(ChunkError):
        dec(blob)


def test_trailing_data_after_full_final_chunk_is_named() -> None:
    with pytest.raises(ChunkError, match="follows the final chunk") as info:
        dec(enc(data_of(2 * CHUNK)) + b"junk")
    assert not isinstance(info.value, TruncatedError)


def test_empty_final_chunk_after_data_is_rejected() -> None:
    # age v1.0.0-beta wrote a full chunk then an empty final one; the spec forbids it.
    file_key = os.urandom(16)
    header = agefile._encode_header([agefile._x25519_wrap(file_key, agefile._parse_recipient(PK))], file_key)
    nonce = os.urandom(16)
    sealer = agefile._Sealer(agefile._hkdf(file_key, nonce, b"payload"))
    payload = bytearray(ENC_CHUNK + 16)
    payload[:CHUNK] = data_of(CHUNK)
    sealer.seal(memoryview(payload), CHUNK, final=False)
    sealer.seal(memoryview(payload)[ENC_CHUNK:], 0, final=True)
    with pytest.raises(ChunkError, match="empty"):
        dec(header + nonce + bytes(payload))


def test_flipped_byte_in_header_fails_the_mac() -> None:
    blob = bytearray(enc(b"hello", [PK, PK2]))
    header = agefile.read_header(io.BytesIO(bytes(blob)))
    # Alter the second stanza's body, which SK's unwrapping never reads.
    body_line = agefile._b64encode(header.stanzas[1].body)
    pos = bytes(blob).index(body_line) + 10
    blob[pos] = ord("A") if blob[pos] != ord("A") else ord("B")
    with pytest.raises(HeaderError, match="MAC"):
        dec(bytes(blob), [SK])
    blob = bytearray(enc(b"hello"))
    mac_pos = payload_start(bytes(blob)) - agefile.NONCE_SIZE - 20
    blob[mac_pos] = ord("A") if blob[mac_pos] != ord("A") else ord("B")
    with pytest.raises(HeaderError, match="MAC"):
        dec(bytes(blob))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h.replace(b"age-encryption.org/v1", b"age-encryption.org/v2"),
        lambda h: h.replace(b"-> X25519 ", b"-> X25519  "),
        lambda h: h.replace(b"\n---", b"\n\n---"),
        lambda h: h.replace(b"\n--- ", b"\n---  "),
        lambda h: h[:-2] + b"=\n",
        lambda h: b"garbage\n" + h,
    ],
)
def test_malformed_header(mangle: Callable[[bytes], bytes]) -> None:
    blob = enc(b"hello")
    end = payload_start(blob) - agefile.NONCE_SIZE
    with pytest.raises(HeaderError):
        dec(mangle(blob[:end]) + blob[end:])


def test_wrong_identity() -> None:
    with pytest.raises(NoIdentityMatch):
        dec(enc(b"secret"), [SK2])
    with pytest.raises(NoIdentityMatch):
        dec(enc(b"secret"), [])
    with pytest.raises(NoIdentityMatch):
        agefile.open_decrypted(io.BytesIO(enc(b"secret")), [SK2])


def test_wrong_passphrase() -> None:
    blob = enc(b"secret", [], passphrase=PASSPHRASE, scrypt_work_factor=TEST_WORK_FACTOR)
    with pytest.raises(BadPassphrase):
        dec(blob, [], passphrase="Correct horse battery staple")
    with pytest.raises(NoIdentityMatch):
        dec(blob, [SK])


def test_scrypt_rules() -> None:
    file_key = os.urandom(16)
    scrypt = agefile._scrypt_wrap(file_key, PASSPHRASE, TEST_WORK_FACTOR)
    x25519 = agefile._x25519_wrap(file_key, agefile._parse_recipient(PK))
    mixed = agefile._encode_header([x25519, scrypt], file_key) + os.urandom(32)
    for kw in ({"identities": [SK]}, {"passphrase": PASSPHRASE}):
        with pytest.raises(HeaderError, match="only stanza"):
            dec(mixed, **kw)
    too_hard = agefile.Stanza("scrypt", (scrypt.args[0], "23"), scrypt.body)
    with pytest.raises(HeaderError, match="work factor"):
        dec(agefile._encode_header([too_hard], file_key) + os.urandom(32), [], passphrase=PASSPHRASE)
    with pytest.raises(ValueError):
        enc(b"x", [PK], passphrase=PASSPHRASE)


def test_armor_is_strict() -> None:
    # A size whose armor ends in padding, to also check canonical padding bits.
    data, blob = next(
        (d, b) for d in (data_of(n) for n in range(1000, 1003)) if b"=" in (b := enc(d, armor=True))
    )
    lines = blob.split(b"\n")
    assert all(len(line) == 64 for line in lines[1:-3]) and len(lines[-3]) <= 64
    assert lines[-2] == b"-----END AGE ENCRYPTED FILE-----" and lines[-1] == b""
    # Tolerated: CRLF line endings and whitespace around the block.
    assert dec(blob.replace(b"\n", b"\r\n")) == data
    assert dec(b"\n  \n" + blob + b" \n\t\n") == data
    rewrapped = b"".join(lines[1:-2])
    last = lines[-3]
    i = last.index(b"=") - 1
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    twisted = last[:i] + bytes([alphabet[alphabet.index(last[i]) ^ 1]]) + last[i + 1 :]
    bad = [
        blob + b"junk",
        blob + b" " * 1024,
        b" " * 1100 + blob,
        blob.replace(b"-----END AGE ENCRYPTED FILE-----\n", b""),
        lines[0] + b"\n" + rewrapped[:70] + b"\n" + rewrapped[70:] + b"\n" + lines[-2] + b"\n",
        blob.replace(lines[3], lines[3][:10] + b" " + lines[3][11:]),
        blob.replace(last, last + b"\n"),
        blob.replace(last, twisted),
        blob.replace(b"-----BEGIN AGE ENCRYPTED FILE-----", b"-----BEGIN AGE ENCRYPTED FILE----- "),
    ]
    for mangled in bad:
        with pytest.raises(ArmorError):
            dec(mangled)


# --- header rewriting --------------------------------------------------------


def test_rewrite_header_adds_a_recipient(tmp_path: Path) -> None:
    data = data_of(3 * CHUNK + 5)
    original = enc(data, [PK])
    src = io.BytesIO(original)
    header = agefile.read_header(src)
    assert src.tell() == header.payload_offset
    assert [s.type for s in header.stanzas] == ["X25519"]
    assert len(agefile.unwrap_file_key(header, [SK])) == 16
    with pytest.raises(NoIdentityMatch):
        agefile.unwrap_file_key(header, [SK2])

    out = io.BytesIO()
    agefile.rewrite_header(io.BytesIO(original), out, [SK], [PK, PK2])
    rewritten = out.getvalue()
    new_header = agefile.read_header(io.BytesIO(rewritten))
    assert len(new_header.stanzas) == 2
    assert rewritten[new_header.payload_offset :] == original[header.payload_offset :]
    assert dec(rewritten, [SK]) == data and dec(rewritten, [SK2]) == data
    with pytest.raises(NoIdentityMatch):
        agefile.rewrite_header(io.BytesIO(original), io.BytesIO(), [SK2], [PK2])

    path = tmp_path / "rewritten.age"
    path.write_bytes(rewritten)
    out_path = tmp_path / "out"
    age("-d", "-i", keyfile(tmp_path, SK2), "-o", str(out_path), str(path))
    assert age_output(out_path) == data


def test_rewrite_header_keeps_armor_and_unlocks_passphrase_files() -> None:
    data = data_of(100)
    armored = enc(data, [PK], armor=True)
    out = io.BytesIO()
    agefile.rewrite_header(io.BytesIO(armored), out, [SK], [PK2])
    assert out.getvalue().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert dec(out.getvalue(), [SK2]) == data
    with pytest.raises(NoIdentityMatch):
        dec(out.getvalue(), [SK])

    locked = enc(data, [], passphrase=PASSPHRASE, scrypt_work_factor=TEST_WORK_FACTOR)
    out = io.BytesIO()
    agefile.rewrite_header(io.BytesIO(locked), out, [], [PK], passphrase=PASSPHRASE)
    assert dec(out.getvalue(), [SK]) == data


def test_age_encrypts_we_decrypt_passphrase(tmp_path: Path) -> None:
    """Files from `age -p`, armored and not, at every size; each read as soon as age is done.

    Each costs age a 2**18 scrypt.  Two shells, one per armor mode, run them
    in turn next to this test's decryptions.  (A single test, so that under
    xdist one worker pays for the chains rather than every worker.)
    """
    files = {(size, armor): tmp_path / f"{size}-{armor}.age" for size in SIZES for armor in (False, True)}
    for size in SIZES:
        (tmp_path / f"plain-{size}").write_bytes(data_of(size, seed=2))
    chains = []
    for armor in (False, True):
        steps = []
        for size in SIZES:
            final = files[size, armor]
            part = final.with_suffix(".part")  # renamed once age is done
            flags = "-a " if armor else ""
            steps.append(f"{AGE} -e -p {flags}-o {part} {tmp_path}/plain-{size} && mv {part} {final}")
        chains.append(TTYAge(["sh", "-c", " && ".join(steps)], answers=2 * len(steps)))
    try:
        deadline = time.monotonic() + TIMEOUT
        for (size, armor), path in files.items():
            while not path.exists():
                for chain in chains:
                    assert chain.proc.poll() in (None, 0), chain.screen()
                assert time.monotonic() < deadline, "age -p did not finish in time"
                time.sleep(0.02)
            with open(path, "rb") as f:
                assert f.read(5) == (b"-----" if armor else b"age-e")
                f.seek(0)
                out = io.BytesIO()
                agefile.decrypt(f, out, passphrase=PASSPHRASE)
            assert out.getvalue() == data_of(size, seed=2), f"size {size}, armor {armor}"
        with open(files[1, False], "rb") as f, pytest.raises(BadPassphrase):
            agefile.decrypt(f, io.BytesIO(), passphrase="wrong")
    finally:
        for chain in chains:
            chain.kill()
