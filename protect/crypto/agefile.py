"""The age v1 file format (https://age-encryption.org/v1, C2SP age), streaming.

An age file is a text header followed by a binary payload::

    age-encryption.org/v1
    -> X25519 <ephemeral share, base64>
    <body: the 16-byte file key wrapped for one recipient, base64 at 64 columns>
    -> ...one stanza per recipient...
    --- <HMAC-SHA256 of the header up to and including "---", base64>
    <16-byte nonce><STREAM chunks>

All base64 in the header is standard, unpadded and canonical; a stanza body ends
with a line shorter than 64 columns (possibly empty).  The header MAC key is
HKDF-SHA256(ikm=file key, salt="", info="header").

Recipient stanzas implemented here:

* ``X25519 <share>``: wrap key = HKDF-SHA256(ikm=X25519(eph, recipient),
  salt=share || recipient, info="age-encryption.org/v1/X25519"); body =
  ChaCha20-Poly1305(wrap key, nonce 0^12, file key).
* ``scrypt <salt> <log2 N>``: wrap key = scrypt(N, r=8, p=1, dkLen=32,
  S="age-encryption.org/v1/scrypt" || salt, P=passphrase); same body.  An scrypt
  stanza must be the only stanza of its header.

Payload: key = HKDF-SHA256(ikm=file key, salt=nonce, info="payload"); the
plaintext is cut into 64 KiB chunks, each sealed with ChaCha20-Poly1305 under the
nonce ``counter (11 bytes, big endian) || flag`` where flag is 0x01 only on the
final chunk.  The final chunk may be full-size; it is empty only when the whole
plaintext is.

Armor is strict PEM ("-----BEGIN AGE ENCRYPTED FILE-----", padded base64 at 64
columns); decryption detects it by itself.  Keys are Bech32 (BIP 173 without
the 90-character limit): ``age1...`` recipients, ``AGE-SECRET-KEY-1...``
identities.

Streams are processed a block of 16 chunks at a time in reused buffers, so
memory stays at a few MiB whatever the file size.  When a stream spans several
blocks, writes to the destination happen on a helper thread while the calling
thread reads and runs the cipher.  So ``dst.write`` may be called from another
thread, and must not keep a reference to the buffer it is given (files,
sockets and BytesIO don't).
"""

from __future__ import annotations

import binascii
import io
import os
import queue
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "AgeError",
    "ArmorError",
    "BadPassphrase",
    "ChunkError",
    "DecryptingReader",
    "EncryptingWriter",
    "HeaderError",
    "Header",
    "KeyFormatError",
    "NoIdentityMatch",
    "Stanza",
    "TruncatedError",
    "TruncatedOrAlteredError",
    "decrypt",
    "encrypt",
    "generate_identity",
    "open_decrypted",
    "open_encrypted",
    "parse_identities",
    "read_header",
    "recipient_of",
    "rewrite_header",
    "unwrap_file_key",
]


class AgeError(Exception):
    """Base class of every error raised for a malformed, tampered or undecryptable file."""


class KeyFormatError(AgeError, ValueError):
    """A recipient or identity string is not a valid age key."""


class HeaderError(AgeError):
    """The header is malformed, uses unsupported parameters, or fails its MAC."""


class NoIdentityMatch(AgeError):
    """None of the given identities (or the passphrase) can unwrap the file key."""


class BadPassphrase(NoIdentityMatch):
    """The file is passphrase-encrypted and the passphrase is wrong."""


class TruncatedError(AgeError):
    """The payload ends early: no final chunk was found."""


class ChunkError(AgeError):
    """A payload chunk fails authentication (altered or reordered), or data follows the final chunk."""


class TruncatedOrAlteredError(TruncatedError, ChunkError):
    """The input ends with a partial chunk that fails authentication.

    A file cut in the middle of a chunk and one whose last chunk was altered look
    the same to the reader, so this error is both a TruncatedError and a ChunkError.
    """


class ArmorError(AgeError):
    """The ASCII armor is not strict, canonical PEM."""


VERSION_LINE = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"

CHUNK = 64 * 1024
TAG = 16
ENC_CHUNK = CHUNK + TAG
# Chunks handled per buffer: big enough that per-call overhead vanishes,
# small enough that a stream's buffers stay at a few MiB.
BLOCK_CHUNKS = 16
BLOCK = BLOCK_CHUNKS * CHUNK
ENC_BLOCK = BLOCK_CHUNKS * ENC_CHUNK

FILE_KEY_SIZE = 16
NONCE_SIZE = 16
DEFAULT_WORK_FACTOR = 18
MAX_WORK_FACTOR = 22

_X25519_LABEL = b"age-encryption.org/v1/X25519"
_SCRYPT_LABEL = b"age-encryption.org/v1/scrypt"
_ZERO_NONCE = bytes(12)
_MAX_HEADER = 1 << 20
_MAX_HEADER_LINE = 64 * 1024
_WHITESPACE = b" \t\n\r\v\f"
_MAX_ARMOR_WHITESPACE = 1024
_ARMOR_READ = 65 * 1024


# --- encodings -------------------------------------------------------------

_B64_RE = re.compile(rb"[A-Za-z0-9+/]*")


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False).rstrip(b"=")


def _b64decode(text: bytes) -> bytes:
    """Decodes unpadded base64, rejecting anything but its canonical form."""
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("invalid base64")
    data = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise ValueError("non-canonical base64")
    return data


_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _bech32_polymod(values: Iterable[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if top >> i & 1:
                chk ^= _BECH32_GEN[i]
    return chk


def _bech32_hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: Iterable[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    maxv = (1 << tobits) - 1
    out = []
    for value in data:
        acc = acc << frombits | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append(acc >> bits & maxv)
    if pad:
        if bits:
            out.append(acc << (tobits - bits) & maxv)
    elif bits >= frombits or acc << (tobits - bits) & maxv:
        raise KeyFormatError("invalid Bech32 padding")
    return out


def _bech32_encode(hrp: str, data: bytes) -> str:
    """Encodes lowercase Bech32 (callers uppercase it where age does)."""
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    mod = _bech32_polymod(_bech32_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [mod >> 5 * (5 - i) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[v] for v in values + checksum)


def _bech32_decode(s: str) -> tuple[str, bytes]:
    """Returns (hrp in the string's case, data); verifies the checksum."""
    if not s.isascii() or (s.lower() != s and s.upper() != s):
        raise KeyFormatError("Bech32 string is not ASCII of a single case")
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise KeyFormatError("Bech32 separator missing or misplaced")
    hrp = s[:pos]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise KeyFormatError("invalid character in Bech32 prefix")
    try:
        values = [_BECH32_CHARSET.index(c) for c in s[pos + 1 :].lower()]
    except ValueError:
        raise KeyFormatError("invalid character in Bech32 data") from None
    if _bech32_polymod(_bech32_hrp_expand(hrp.lower()) + values) != 1:
        raise KeyFormatError("invalid Bech32 checksum")
    return hrp, bytes(_convert_bits(values[:-6], 5, 8, pad=False))


# --- keys ------------------------------------------------------------------

_RECIPIENT_HRP = "age"
_IDENTITY_HRP = "AGE-SECRET-KEY-"


def _parse_recipient(recipient: str) -> bytes:
    hrp, data = _bech32_decode(recipient)
    if hrp != _RECIPIENT_HRP or len(data) != 32:
        raise KeyFormatError("not an age X25519 recipient (age1...)")
    return data


def _parse_identity(identity: str) -> X25519PrivateKey:
    hrp, data = _bech32_decode(identity)
    if hrp != _IDENTITY_HRP or len(data) != 32:
        raise KeyFormatError("not an age X25519 identity (AGE-SECRET-KEY-1...)")
    return X25519PrivateKey.from_private_bytes(data)


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def generate_identity() -> tuple[str, str]:
    """Returns a new (AGE-SECRET-KEY-1..., age1...) key pair."""
    key = X25519PrivateKey.generate()
    secret = _bech32_encode(_IDENTITY_HRP, key.private_bytes_raw()).upper()
    return secret, _bech32_encode(_RECIPIENT_HRP, _public_bytes(key))


def recipient_of(identity: str) -> str:
    """Returns the age1... recipient of an AGE-SECRET-KEY-1... identity."""
    return _bech32_encode(_RECIPIENT_HRP, _public_bytes(_parse_identity(identity)))


def parse_identities(text: str) -> list[str]:
    """Parses an identity file: one key a line, blank lines and '#' comments ignored."""
    identities = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            _parse_identity(line)
            identities.append(line)
    return identities


# --- header ----------------------------------------------------------------


@dataclass(frozen=True)
class Stanza:
    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        body = _b64encode(self.body)
        # The body always ends with a line shorter than 64 columns, possibly empty.
        lines = [body[i : i + 64] + b"\n" for i in range(0, len(body), 64)]
        if len(body) % 64 == 0:
            lines.append(b"\n")
        return b"-> " + " ".join((self.type, *self.args)).encode() + b"\n" + b"".join(lines)


@dataclass(frozen=True)
class Header:
    """A parsed header.

    ``mac_input`` is the header text the MAC covers (up to and including
    "---"); ``payload_offset`` is where the payload (its nonce) starts in the
    age stream, which for an armored file is the decoded stream.
    """

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes
    payload_offset: int
    armored: bool


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _header_hmac(file_key: bytes, mac_input: bytes) -> hmac.HMAC:
    h = hmac.HMAC(_hkdf(file_key, b"", b"header"), hashes.SHA256())
    h.update(mac_input)
    return h


def _encode_header(stanzas: list[Stanza], file_key: bytes) -> bytes:
    mac_input = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    mac = _header_hmac(file_key, mac_input).finalize()
    return mac_input + b" " + _b64encode(mac) + b"\n"


def _x25519_wrap(file_key: bytes, recipient: bytes) -> Stanza:
    ephemeral = X25519PrivateKey.generate()
    share = _public_bytes(ephemeral)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    wrap_key = _hkdf(shared, share + recipient, _X25519_LABEL)
    body = ChaCha20Poly1305(wrap_key).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza("X25519", (_b64encode(share).decode(),), body)


def _x25519_unwrap(stanza: Stanza, key: X25519PrivateKey, our_public: bytes) -> bytes | None:
    if len(stanza.args) != 1:
        raise HeaderError("X25519 stanza must have exactly one argument")
    try:
        share = _b64decode(stanza.args[0].encode())
    except ValueError as e:
        raise HeaderError(f"X25519 stanza share: {e}") from None
    # Checking sizes before decrypting avoids partitioning-oracle attacks.
    if len(share) != 32 or len(stanza.body) != FILE_KEY_SIZE + TAG:
        raise HeaderError("X25519 stanza has the wrong share or body size")
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:  # the library refuses an all-zero shared secret
        raise HeaderError("X25519 stanza has a low-order share") from None
    wrap_key = _hkdf(shared, share + our_public, _X25519_LABEL)
    try:
        return ChaCha20Poly1305(wrap_key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None


def _scrypt_key(passphrase: str, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=_SCRYPT_LABEL + salt, length=32, n=1 << log_n, r=8, p=1)
    return kdf.derive(passphrase.encode())


def _scrypt_wrap(file_key: bytes, passphrase: str, log_n: int) -> Stanza:
    salt = os.urandom(16)
    body = ChaCha20Poly1305(_scrypt_key(passphrase, salt, log_n)).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza("scrypt", (_b64encode(salt).decode(), str(log_n)), body)


_WORK_FACTOR_RE = re.compile(r"[1-9][0-9]*")


def _scrypt_unwrap(stanza: Stanza, passphrase: str) -> bytes:
    if len(stanza.args) != 2 or not _WORK_FACTOR_RE.fullmatch(stanza.args[1]):
        raise HeaderError("malformed scrypt stanza")
    try:
        salt = _b64decode(stanza.args[0].encode())
    except ValueError as e:
        raise HeaderError(f"scrypt stanza salt: {e}") from None
    if len(salt) != 16 or len(stanza.body) != FILE_KEY_SIZE + TAG:
        raise HeaderError("scrypt stanza has the wrong salt or body size")
    log_n = int(stanza.args[1])
    if log_n > MAX_WORK_FACTOR:
        raise HeaderError(f"scrypt work factor {log_n} is above the limit of {MAX_WORK_FACTOR}")
    try:
        return ChaCha20Poly1305(_scrypt_key(passphrase, salt, log_n)).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        raise BadPassphrase("wrong passphrase") from None


def _wrap_file_key(
    file_key: bytes, recipients: Iterable[str], passphrase: str | None, work_factor: int
) -> list[Stanza]:
    if isinstance(recipients, str):
        raise TypeError("recipients must be a list of strings, not a string")
    keys = [_parse_recipient(r) for r in dict.fromkeys(recipients)]
    if passphrase is not None:
        if keys:
            raise ValueError("a passphrase can't be combined with other recipients")
        if not passphrase:
            raise ValueError("the passphrase is empty")
        if not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise ValueError(f"scrypt work factor must be between 1 and {MAX_WORK_FACTOR}")
        return [_scrypt_wrap(file_key, passphrase, work_factor)]
    if not keys:
        raise ValueError("no recipients")
    return [_x25519_wrap(file_key, k) for k in keys]


def _x25519_unwrap_any(stanzas: Iterable[Stanza], keys: list[X25519PrivateKey]) -> bytes | None:
    pairs = [(key, _public_bytes(key)) for key in keys]
    for stanza in stanzas:
        if stanza.type != "X25519":
            continue  # other recipient types are not for us
        for key, public in pairs:
            file_key = _x25519_unwrap(stanza, key, public)
            if file_key is not None:
                return file_key
    return None


def unwrap_file_key(header: Header, identities: Iterable[str] = (), *, passphrase: str | None = None) -> bytes:
    """Recovers the file key with an identity or passphrase and checks the header MAC."""
    if isinstance(identities, str):
        raise TypeError("identities must be a list of strings, not a string")
    keys = [_parse_identity(i) for i in identities]
    file_key: bytes | None
    if any(s.type == "scrypt" for s in header.stanzas):
        if len(header.stanzas) != 1:
            raise HeaderError("an scrypt stanza must be the only stanza")
        if passphrase is None:
            raise NoIdentityMatch("the file is passphrase-encrypted and no passphrase was given")
        file_key = _scrypt_unwrap(header.stanzas[0], passphrase)
    else:
        file_key = _x25519_unwrap_any(header.stanzas, keys)
        if file_key is None:
            raise NoIdentityMatch("no identity matches any recipient of the file")
    try:
        _header_hmac(file_key, header.mac_input).verify(header.mac)
    except InvalidSignature:
        raise HeaderError("header MAC mismatch: the header was altered") from None
    return file_key


class Sink(Protocol):
    """Where output goes: a file, a BytesIO, a blob writer... anything with a binary
    write() that returns the count it took (or None, meaning all of it)."""

    def write(self, data: memoryview | bytes, /) -> int | None: ...


# --- input -----------------------------------------------------------------


class _Source:
    """A binary input with a pushback buffer.

    Armor detection and header parsing read ahead by lines; whatever they read
    past is served first to later reads, which then go straight to readinto.
    """

    def __init__(self, raw: BinaryIO | _ArmorReader) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self._raw_readinto = getattr(raw, "readinto", None)

    def _more(self, n: int = 4096) -> bool:
        data = self._raw.read(n)
        if data is None:
            raise BlockingIOError("non-blocking sources are not supported")
        if not data:
            return False
        self._buf = self._buf[self._pos :] + data
        self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._more(n):
            pass
        return self._buf[self._pos : self._pos + n]

    def read(self, n: int) -> bytes:
        if self._pos == len(self._buf) and not self._more(n):
            return b""
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        return data

    def readline(self, limit: int) -> bytes:
        """Returns a line with its LF; without one only at EOF or past limit bytes."""
        while True:
            i = self._buf.find(b"\n", self._pos, self._pos + limit)
            if i >= 0:
                end = i + 1
                break
            if len(self._buf) - self._pos >= limit or not self._more():
                end = min(len(self._buf), self._pos + limit)
                break
        line = self._buf[self._pos : end]
        self._pos = end
        return line

    def readinto(self, mv: memoryview) -> int:
        if self._pos < len(self._buf):
            n = min(len(mv), len(self._buf) - self._pos)
            mv[:n] = self._buf[self._pos : self._pos + n]
            self._pos += n
            return n
        if self._raw_readinto is not None:
            n = self._raw_readinto(mv)
            if n is None:
                raise BlockingIOError("non-blocking sources are not supported")
            return n
        data = self._raw.read(len(mv))
        mv[: len(data)] = data
        return len(data)

    def readfull(self, mv: memoryview) -> int:
        """Fills mv unless EOF comes first; returns the byte count."""
        got = 0
        while got < len(mv):
            n = self.readinto(mv[got:])
            if not n:
                break
            got += n
        return got


class _ArmorReader:
    """Strict decoder of age's PEM armor (RFC 7468 strict form), LF or CRLF lines.

    Up to 1 KiB of whitespace is allowed around the PEM block, as in age.
    """

    def __init__(self, src: _Source) -> None:
        self._src = src
        self._text = b""  # armor text read so far, undecoded from _pos on
        self._pos = 0
        self._out = b""  # decoded, not yet returned
        self._out_pos = 0
        self._started = False
        self._need_end = False  # a short line was seen: only the END line may follow
        self._ended = False
        self._seen_data = False

    def _fill(self) -> bool:
        more = self._src.read(_ARMOR_READ)
        if not more:
            return False
        self._text = self._text[self._pos :] + more
        self._pos = 0
        return True

    def _take_line(self, limit: int) -> tuple[bytes, bool]:
        """Returns the next line without its line ending, and whether it had one."""
        while True:
            i = self._text.find(b"\n", self._pos)
            if i >= 0:
                line = self._text[self._pos : i]
                self._pos = i + 1
                return (line[:-1] if line.endswith(b"\r") else line), True
            if len(self._text) - self._pos > limit:
                raise ArmorError("armor line too long")
            if not self._fill():
                line = self._text[self._pos :]
                self._pos = len(self._text)
                return line, False

    def _begin(self) -> None:
        skipped = 0
        while True:
            line, had_newline = self._take_line(_MAX_ARMOR_WHITESPACE + len(ARMOR_BEGIN))
            if line.strip(_WHITESPACE) or not had_newline:
                break
            skipped += len(line) + 1
            if skipped > _MAX_ARMOR_WHITESPACE:
                raise ArmorError("too much whitespace before the armor")
        if line != ARMOR_BEGIN or not had_newline:
            raise ArmorError("missing BEGIN AGE ENCRYPTED FILE line")
        self._started = True

    def _finish(self) -> None:
        rest = self._text[self._pos :]
        while len(rest) < _MAX_ARMOR_WHITESPACE:
            more = self._src.read(_MAX_ARMOR_WHITESPACE - len(rest))
            if not more:
                break
            rest += more
        if rest.strip(_WHITESPACE):
            raise ArmorError("data after the END line")
        if len(rest) >= _MAX_ARMOR_WHITESPACE:
            raise ArmorError("too much whitespace after the armor")
        self._ended = True

    def _decode_bulk(self) -> bytes:
        """Decodes the run of full, unpadded 64-column lines ahead, if any.

        Lines are checked in bulk (line ends on a fixed grid, no other line
        ends, no padding) so that the usual case costs no Python per line.
        """
        if len(self._text) - self._pos < 66:
            self._fill()
        text, start = self._text, self._pos
        eol = b"\r\n" if text[start + 64 : start + 66] == b"\r\n" else b"\n"
        stride = 64 + len(eol)
        lines = (len(text) - start) // stride
        padding = text.find(b"=", start, start + lines * stride)
        if padding >= 0:  # only the last line may be padded: leave it to _decode_line
            lines = (padding - start) // stride

        def regular(n: int) -> bool:
            end = start + n * stride
            return all(
                text.count(c, start, end) == n and text[start + 64 + i : end : stride] == c * n
                for i, c in enumerate((eol[:1], eol[1:]) if len(eol) == 2 else (eol,))
            )

        # Usually all are regular; else, as regular prefixes nest, bisect.
        low, high = (lines, lines) if regular(lines) else (0, lines - 1)
        while low < high:
            mid = (low + high + 1) // 2
            if regular(mid):
                low = mid
            else:
                high = mid - 1
        if not low:
            return b""
        end = start + low * stride
        try:
            # Unpadded full lines are canonical as soon as they are valid base64.
            data = binascii.a2b_base64(text[start:end].translate(None, b"\r\n"), strict_mode=True)
        except binascii.Error as e:
            raise ArmorError(f"invalid base64 in armor: {e}") from None
        self._pos = end
        return data

    def _decode_line(self) -> bytes:
        line, had_newline = self._take_line(66)
        if line == ARMOR_END:
            if not self._seen_data:
                raise ArmorError("empty armor")
            self._finish()
            return b""
        if self._need_end:
            raise ArmorError("armor line after the last, short line")
        if not had_newline:
            raise ArmorError("armor ends without its END line")
        if len(line) > 64:
            raise ArmorError("armor line longer than 64 columns")
        try:
            data = binascii.a2b_base64(line, strict_mode=True)
        except binascii.Error as e:
            raise ArmorError(f"invalid base64 in armor: {e}") from None
        if not data or binascii.b2a_base64(data, newline=False) != line:
            raise ArmorError("non-canonical base64 in armor")
        self._need_end = len(data) < 48
        return data

    def _decode(self) -> bytes:
        if not self._started:
            self._begin()
        data = b"" if self._need_end else self._decode_bulk()
        if not data:
            data = self._decode_line()
        self._seen_data = self._seen_data or bool(data)
        return data

    def read(self, n: int) -> bytes:
        while self._out_pos == len(self._out):
            if self._ended:
                return b""
            self._out, self._out_pos = self._decode(), 0
        data = self._out[self._out_pos : self._out_pos + n]
        self._out_pos += len(data)
        return data

    def readinto(self, mv: memoryview) -> int:
        data = self.read(len(mv))
        mv[: len(data)] = data
        return len(data)


def _open_stream(src: BinaryIO) -> tuple[_Source, bool]:
    """Wraps src, decoding armor when the input starts with it."""
    raw = _Source(src)
    head = raw.peek(_MAX_ARMOR_WHITESPACE + len(ARMOR_BEGIN))
    stripped = head.lstrip(_WHITESPACE)
    # A binary file can't start with whitespace: let the armor reader name the error.
    if stripped.startswith(b"-----") or (head and not stripped):
        return _Source(_ArmorReader(raw)), True
    return raw, False


def _parse_header(stream: _Source, armored: bool) -> Header:
    size = 0

    def line() -> bytes:
        data = stream.readline(_MAX_HEADER_LINE)
        nonlocal size
        size += len(data)
        if not data.endswith(b"\n"):
            raise HeaderError("header truncated or line too long")
        if size > _MAX_HEADER:
            raise HeaderError("header too large")
        return data

    first = line()
    if first != VERSION_LINE:
        if first.startswith(b"age-encryption.org/"):
            raise HeaderError(f"unsupported age version {first[19:-1]!r}")
        raise HeaderError("not an age file")
    mac_input = [first]
    stanzas = []
    while True:
        text = line()
        if text.startswith(b"---"):
            if not text.startswith(b"--- ") or len(text) != 48:
                raise HeaderError("malformed MAC line")
            try:
                mac = _b64decode(text[4:-1])
            except ValueError as e:
                raise HeaderError(f"malformed MAC line: {e}") from None
            mac_input.append(b"---")
            break
        if not text.startswith(b"-> "):
            raise HeaderError("unexpected line in header")
        args = text[3:-1].split(b" ")
        if any(not a or any(c < 33 or c > 126 for c in a) for a in args):
            raise HeaderError("malformed stanza arguments")
        mac_input.append(text)
        body_lines = []
        while True:
            body_line = line()
            mac_input.append(body_line)
            if len(body_line) > 65:
                raise HeaderError("stanza body line longer than 64 columns")
            body_lines.append(body_line[:-1])
            if len(body_line) < 65:
                break
        try:
            body = _b64decode(b"".join(body_lines))
        except ValueError as e:
            raise HeaderError(f"malformed stanza body: {e}") from None
        decoded = [a.decode() for a in args]
        stanzas.append(Stanza(decoded[0], tuple(decoded[1:]), body))
    if not stanzas:
        raise HeaderError("header has no recipient stanza")
    return Header(tuple(stanzas), mac, b"".join(mac_input), size, armored)


def read_header(src: BinaryIO) -> Header:
    """Parses the header of an age file (binary or armored).

    If src is seekable and binary, it is left positioned at the payload start;
    otherwise its position afterwards is unspecified (the parser reads ahead).
    """
    seekable = getattr(src, "seekable", None)
    start = src.tell() if seekable is not None and seekable() else None
    stream, armored = _open_stream(src)
    header = _parse_header(stream, armored)
    if start is not None and not armored:
        src.seek(start + header.payload_offset)
    return header


# --- payload ---------------------------------------------------------------


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class _Sealer:
    """Seals the chunks of a block, keeping the STREAM counter.

    Chunk i of a block sits at i * ENC_CHUNK, its plaintext sealed in place
    (room for its tag follows it) or sealed into it from elsewhere, so the
    sealed block is contiguous and needs no second buffer.
    """

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def seal(self, buf: memoryview, size: int, final: bool, first: int = 0) -> int:
        """Seals in place the chunks, from first on (those before are sealed
        already), of a block of size plaintext bytes; returns its sealed length."""
        aead, counter = self._aead, self._counter
        last = max(0, (size - 1) // CHUNK)
        for i in range(first, last + 1):
            start = i * ENC_CHUNK
            n = CHUNK if i < last else size - last * CHUNK
            nonce = _nonce(counter + i - first, final and i == last)
            aead.encrypt_into(nonce, buf[start : start + n], None, buf[start : start + n + TAG])
        self._counter = counter + last + 1 - first
        return size + TAG * (last + 1)

    def seal_from(self, src: memoryview, buf: memoryview, first: int) -> None:
        """Seals src, whole chunks none of which is the last, into chunks first... of buf."""
        aead, counter = self._aead, self._counter
        count = len(src) // CHUNK
        for k in range(count):
            start = (first + k) * ENC_CHUNK
            aead.encrypt_into(
                _nonce(counter + k, False), src[k * CHUNK : (k + 1) * CHUNK], None,
                buf[start : start + ENC_CHUNK],
            )
        self._counter = counter + count


class _PayloadReader:
    """Authenticates and decrypts the payload a block of chunks at a time.

    The block buffer holds one byte more than a block: reading it tells whether
    input continues, so each chunk is opened with the right final flag and no
    plaintext is released before its chunk authenticates.
    """

    def __init__(self, stream: _Source, key: bytes) -> None:
        self._stream = stream
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self._buf = bytearray(ENC_BLOCK + 1)
        self._carried = 0
        self.done = False
        self._error: AgeError | None = None

    def read_block(self, out: memoryview) -> int:
        """Decrypts the next block into out (at least BLOCK bytes); returns its length."""
        if self._error is not None:
            raise self._error
        buf = memoryview(self._buf)
        got = self._carried + self._stream.readfull(buf[self._carried :])
        final = got <= ENC_BLOCK
        try:
            n = self._open(buf[: min(got, ENC_BLOCK)], out, final)
        except AgeError as e:
            # A failed open may have left unauthenticated plaintext behind.
            out[:BLOCK] = bytes(BLOCK)
            self._error = e
            raise
        if final:
            self.done = True
        else:
            self._buf[0] = self._buf[ENC_BLOCK]
            self._carried = 1
        return n

    def _open(self, data: memoryview, out: memoryview, final: bool) -> int:
        if not data:  # only possible right after the nonce
            raise TruncatedError("the payload has no chunks")
        aead, counter, n = self._aead, self._counter, len(data)
        pos = out_pos = 0
        while pos < n:
            end = min(pos + ENC_CHUNK, n)
            size = end - pos
            if size < TAG:
                raise TruncatedError("the payload ends inside a chunk")
            last = final and end == n
            chunk, target = data[pos:end], out[out_pos : out_pos + size - TAG]
            try:
                aead.decrypt_into(_nonce(counter, last), chunk, None, target)
            except InvalidTag:
                raise self._diagnose(chunk, target, counter, last) from None
            if last and size == TAG and counter > 0:
                raise ChunkError("the final chunk is empty")
            counter += 1
            pos, out_pos = end, out_pos + size - TAG
        self._counter = counter
        return out_pos

    def _diagnose(self, chunk: memoryview, target: memoryview, counter: int, last: bool) -> AgeError:
        """Names why a chunk failed, by trying it with the other final flag."""
        if len(chunk) == ENC_CHUNK:
            try:
                self._aead.decrypt_into(_nonce(counter, not last), chunk, None, target)
            except InvalidTag:
                pass
            else:
                if last:
                    return TruncatedError(f"the payload ends after chunk {counter}, which is not final")
                return ChunkError(f"data follows the final chunk {counter}")
        elif last:
            return TruncatedOrAlteredError(f"the last chunk ({counter}) is cut short or altered")
        return ChunkError(f"chunk {counter} failed authentication: altered or out of order")


def _write_all(dst: Sink, data: memoryview | bytes) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        # None is what sinks that don't count return; raw files may write less.
        if n is None or n >= len(view):
            return
        view = view[n:]


# Decrypted blocks go out in 256 KiB writes: on the Linux 6.18 VM (ext4) this was
# tuned on, 1 MiB page-cache writes at 1 MiB-aligned offsets, which is where
# plaintext blocks fall, ran 2-3x slower.  (Sealed blocks are 1 MiB + 256 bytes
# after a header, never aligned, and are fastest written whole.)
_PLAIN_WRITE = 256 * 1024


class _Output:
    """Writes blocks to dst, from a small pool of buffers.

    Once a stream needs a second block, writing moves to a helper thread, so
    that the destination's I/O overlaps the reading and cipher work of the
    calling thread (all of which release the GIL); on an idle 2-vCPU machine
    that made both directions about 1.4x faster.  Single-block streams never
    start the thread.
    """

    _POOL = 3

    def __init__(self, dst: Sink, size: int, write_size: int) -> None:
        self._dst = dst
        self._size = size
        self._write_size = write_size
        self._made = 0
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._todo: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._aborted = False

    def buffer(self) -> bytearray:
        if self._made < self._POOL and self._free.empty():
            self._made += 1
            return bytearray(self._size)
        buf = self._free.get()
        if self._error is not None:
            raise self._error
        return buf

    def _write(self, buf: bytearray, n: int) -> None:
        view = memoryview(buf)
        for i in range(0, n, self._write_size):
            _write_all(self._dst, view[i : min(n, i + self._write_size)])

    def submit(self, buf: bytearray, n: int, final: bool) -> None:
        if self._thread is None:
            if final:
                self._write(buf, n)
                self._free.put(buf)
                return
            self._thread = threading.Thread(target=self._run, name="agefile-writer", daemon=True)
            self._thread.start()
        self._todo.put((buf, n))

    def _run(self) -> None:
        while (item := self._todo.get()) is not None:
            buf, n = item
            if self._error is None and not self._aborted:
                try:
                    self._write(buf, n)
                except BaseException as e:  # handed to the calling thread
                    self._error = e
            self._free.put(buf)

    def close(self) -> None:
        """Waits for queued writes; raises the helper's write error, if any."""
        self._stop()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drops queued writes and stops the helper."""
        self._aborted = True
        self._stop()

    def _stop(self) -> None:
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None


class _ArmorWriter:
    """Writes strict PEM armor: padded base64 at 64 columns between BEGIN/END lines."""

    def __init__(self, dst: Sink) -> None:
        self._dst = dst
        self._tail = b""  # under 48 bytes, waiting to fill a line
        _write_all(dst, ARMOR_BEGIN + b"\n")

    def write(self, data: memoryview | bytes) -> int:
        pending = self._tail + bytes(data)
        whole = len(pending) - len(pending) % 48
        if whole:
            encoded = binascii.b2a_base64(pending[:whole], newline=False)
            lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
            _write_all(self._dst, b"\n".join(lines) + b"\n")
        self._tail = pending[whole:]
        return len(data)

    def close(self) -> None:
        end = ARMOR_END + b"\n"
        if self._tail:
            end = binascii.b2a_base64(self._tail, newline=False) + b"\n" + end
        _write_all(self._dst, end)


class EncryptingWriter(io.BufferedIOBase):
    """Encrypts what is written to it; close() seals the final chunk.

    Leaving a ``with`` block through an exception, or dropping the object
    unclosed, aborts instead: the final chunk is not written, so the partial
    output reads as truncated rather than as a complete, shorter file.
    dst is flushed but never closed.
    """

    def __init__(self, dst: Sink, header: bytes, file_key: bytes, armor: bool) -> None:
        self._dst = dst
        self._armor = _ArmorWriter(dst) if armor else None
        sink = self._armor or dst
        nonce = os.urandom(NONCE_SIZE)
        _write_all(sink, header + nonce)
        self._sealer = _Sealer(_hkdf(file_key, nonce, b"payload"))
        self._out = _Output(sink, ENC_BLOCK, ENC_BLOCK)
        self._buf = self._out.buffer()
        self._fill = 0  # plaintext bytes in the block
        self._sealed = 0  # chunks at the start of the block sealed already
        # A full block is sealed only once more data shows it is not the last;
        # _fill_from reads that byte ahead into here.
        self._ahead = bytearray(1)

    def writable(self) -> bool:
        return True

    def _emit(self, final: bool) -> None:
        n = self._sealer.seal(memoryview(self._buf), self._fill, final, self._sealed)
        self._out.submit(self._buf, n, final)
        if not final:
            self._buf = self._out.buffer()
            self._fill = self._sealed = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed encrypted file")
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            if self._fill == BLOCK:  # more data follows, so the block is not the last
                self._emit(final=False)
            i, offset = divmod(self._fill, CHUNK)
            if not offset:
                # With data to come, a full chunk in the block and the whole
                # chunks of view before its last byte are not the last: seal
                # them now, those of view straight from the caller's buffer
                # rather than copied into the block first. Only the chunk with
                # the last byte is copied, to wait until close() or more data
                # tells whether it is the final one.
                if i > self._sealed:
                    self._sealer.seal(memoryview(self._buf), i * CHUNK, False, self._sealed)
                    self._sealed = i
                if whole := min((len(view) - 1) // CHUNK, BLOCK_CHUNKS - i):
                    self._sealer.seal_from(view[: whole * CHUNK], memoryview(self._buf), i)
                    self._fill += whole * CHUNK
                    self._sealed = i + whole
                    view = view[whole * CHUNK :]
                    continue
            n = min(len(view), CHUNK - offset)
            start = i * ENC_CHUNK + offset
            self._buf[start : start + n] = view[:n]
            self._fill += n
            view = view[n:]
        return total

    def _fill_from(self, src: _Source) -> bool:
        """Reads from src straight into the block's chunk slots; False at EOF."""
        while self._fill < BLOCK:
            i, offset = divmod(self._fill, CHUNK)
            start = i * ENC_CHUNK + offset
            got = src.readfull(memoryview(self._buf)[start : start + CHUNK - offset])
            self._fill += got
            if got < CHUNK - offset:
                return False
        if not src.readfull(memoryview(self._ahead)):
            return False
        self._emit(final=False)
        self._buf[0] = self._ahead[0]
        self._fill = 1
        return True

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._emit(final=True)
            self._out.close()
            if self._armor is not None:
                self._armor.close()
            flush = getattr(self._dst, "flush", None)
            if flush is not None:
                flush()
        except BaseException:
            self._out.abort()
            raise
        finally:
            super().close()

    def abort(self) -> None:
        """Stops without sealing the final chunk; what was written won't decrypt."""
        if not self.closed:
            self._out.abort()
            super().close()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # io's default would close(), sealing a final chunk after a failure.
        if hasattr(self, "_out"):
            self.abort()


class DecryptingReader(io.RawIOBase):
    """Reads the plaintext of an age file; each chunk is authenticated before any of it is returned.

    A read past the end raises TruncatedError if the file has no final chunk.
    Closing it does not close the source.
    """

    def __init__(self, payload: _PayloadReader) -> None:
        self._payload = payload
        self._plain = bytearray(BLOCK)
        self._pos = self._end = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("read from a closed decrypted file")
        view = memoryview(b).cast("B")
        if not view:
            return 0
        if self._pos == self._end:
            if self._payload.done:
                return 0
            if len(view) >= BLOCK:
                return self._payload.read_block(view)
            self._end, self._pos = self._payload.read_block(memoryview(self._plain)), 0
        n = min(len(view), self._end - self._pos)
        view[:n] = memoryview(self._plain)[self._pos : self._pos + n]
        self._pos += n
        return n

    def readall(self) -> bytes:
        parts = []
        while data := self.read(BLOCK):
            parts.append(data)
        return b"".join(parts)


# --- public API ------------------------------------------------------------


def open_encrypted(
    dst: Sink,
    recipients: Iterable[str] = (),
    *,
    passphrase: str | None = None,
    armor: bool = False,
    scrypt_work_factor: int = DEFAULT_WORK_FACTOR,
) -> EncryptingWriter:
    """Returns a writable file object that encrypts into dst.

    Encrypts to X25519 recipients (age1...) or, alone, to a passphrase (scrypt
    with 2**scrypt_work_factor iterations).  The header is written at once;
    close() writes the final chunk and the armor's END line, and flushes dst
    without closing it.  Use it as a context manager: an exception inside the
    ``with`` block aborts the file instead of finalizing it.
    """
    file_key = os.urandom(FILE_KEY_SIZE)
    stanzas = _wrap_file_key(file_key, recipients, passphrase, scrypt_work_factor)
    return EncryptingWriter(dst, _encode_header(stanzas, file_key), file_key, armor)


def encrypt(
    src: BinaryIO,
    dst: Sink,
    recipients: Iterable[str] = (),
    *,
    passphrase: str | None = None,
    armor: bool = False,
    scrypt_work_factor: int = DEFAULT_WORK_FACTOR,
) -> None:
    """Encrypts src to dst; see open_encrypted.  Neither stream is closed."""
    writer = open_encrypted(
        dst, recipients, passphrase=passphrase, armor=armor, scrypt_work_factor=scrypt_work_factor
    )
    with writer:
        source = _Source(src)
        while writer._fill_from(source):
            pass


def _open_payload(
    src: BinaryIO, identities: Iterable[str], passphrase: str | None
) -> _PayloadReader:
    stream, armored = _open_stream(src)
    header = _parse_header(stream, armored)
    file_key = unwrap_file_key(header, identities, passphrase=passphrase)
    nonce = bytearray(NONCE_SIZE)
    if stream.readfull(memoryview(nonce)) < NONCE_SIZE:
        raise TruncatedError("the payload nonce is cut short")
    return _PayloadReader(stream, _hkdf(file_key, bytes(nonce), b"payload"))


def open_decrypted(
    src: BinaryIO, identities: Iterable[str] = (), *, passphrase: str | None = None
) -> DecryptingReader:
    """Returns a readable file object with the plaintext of src (binary or armored).

    The header is parsed and the file key unwrapped at once, so a wrong key
    raises here.  Payload errors surface from read(): never is plaintext of a
    chunk returned before that chunk authenticates, but a truncated or altered
    file is only detected when the reader gets there.
    """
    return DecryptingReader(_open_payload(src, identities, passphrase))


def decrypt(
    src: BinaryIO, dst: Sink, identities: Iterable[str] = (), *, passphrase: str | None = None
) -> None:
    """Decrypts src (binary or armored) into dst.

    Only authenticated plaintext is written, but on an error dst may hold the
    plaintext of the chunks before the bad one: discard it.  dst is not closed.
    """
    payload = _open_payload(src, identities, passphrase)
    out = _Output(dst, BLOCK, _PLAIN_WRITE)
    try:
        while not payload.done:
            buf = out.buffer()
            n = payload.read_block(memoryview(buf))
            out.submit(buf, n, payload.done)
    except BaseException:
        out.abort()
        raise
    out.close()


def rewrite_header(
    src: BinaryIO,
    dst: Sink,
    identities: Iterable[str],
    recipients: Iterable[str],
    *,
    passphrase: str | None = None,
) -> None:
    """Copies src to dst with a header for a new recipient set, same payload.

    The file key is unwrapped with identities (or passphrase) and wrapped for
    recipients; the payload bytes are copied unchanged (and not decrypted, so
    damage in them shows only when dst is decrypted).  Armored input gives
    armored output.  Whoever could read the old file and kept its file key can
    still read the new one: dropping a recipient this way does not revoke it.
    """
    stream, armored = _open_stream(src)
    header = _parse_header(stream, armored)
    file_key = unwrap_file_key(header, identities, passphrase=passphrase)
    stanzas = _wrap_file_key(file_key, recipients, None, DEFAULT_WORK_FACTOR)
    armor_writer = _ArmorWriter(dst) if armored else None
    sink = armor_writer or dst
    _write_all(sink, _encode_header(stanzas, file_key))
    buf = bytearray(ENC_BLOCK)
    view = memoryview(buf)
    while n := stream.readinto(view):
        _write_all(sink, view[:n])
    if armor_writer is not None:
        armor_writer.close()
