"""Master keys and what is derived from them.

Each master key has an id; the newest seals new data, every key still opens
what it sealed, so keys rotate without downtime. Keys come from
``PROTECT_MASTER_KEYS`` (``kid:base64,...``, oldest first) for hosts that keep
keys off the disk, or from ``instance/keys/<kid>.key`` (created with mode 0600
on first run). The master key itself never touches data: AES-256-GCM column
keys, blind-index keys and key-wrapping keys are derived from it with HKDF.

Sealed format: ``0x01 | len(kid) | kid | nonce(12) | AES-256-GCM(ct || tag)``.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 1
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(Exception):
    """Base of the keyring's errors."""


class IntegrityError(KeyringError):
    """A ciphertext was altered, moved to another place, or is not ours."""


class UnknownKey(KeyringError):
    """A ciphertext names a key this host does not have (retired or missing)."""


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"protect/{purpose}/v1".encode()).derive(master)


@dataclass(frozen=True)
class MasterKey:
    kid: str
    column_key: bytes
    index_key: bytes
    wrap_key: bytes

    @classmethod
    def from_secret(cls, kid: str, secret: bytes) -> MasterKey:
        if len(secret) != 32:
            raise KeyringError(f"master key {kid} must be 32 bytes")
        return cls(kid, _derive(secret, "columns"), _derive(secret, "blind-index"),
                   _derive(secret, "wrap"))


class Keyring:
    def __init__(self, keys: list[MasterKey]):
        if not keys:
            raise KeyringError("no master key")
        self.keys = list(keys)
        self._by_kid = {k.kid: k for k in keys}
        self._ciphers: dict[bytes, AESGCM] = {}  # one AESGCM per derived key, not per call

    @property
    def newest(self) -> MasterKey:
        return self.keys[-1]

    def key(self, kid: str) -> MasterKey:
        try:
            return self._by_kid[kid]
        except KeyError:
            raise UnknownKey(f"master key {kid!r} is not available") from None

    # -- sealing (columns and wrapped keys) -------------------------------
    def seal(self, plaintext: bytes, aad: str, *, purpose: str = "columns") -> bytes:
        key = self.newest
        nonce = os.urandom(12)
        kid = key.kid.encode()
        head = bytes([VERSION, len(kid)]) + kid
        body = self._cipher(self._secret(key, purpose)).encrypt(nonce, plaintext, head + aad.encode())
        return head + nonce + body

    def open(self, sealed: bytes, aad: str, *, purpose: str = "columns") -> bytes:
        kid, head = self.kid_of(sealed)
        nonce = sealed[len(head):len(head) + 12]
        body = sealed[len(head) + 12:]
        try:
            return self._cipher(self._secret(self.key(kid), purpose)).decrypt(
                nonce, body, head + aad.encode())
        except InvalidTag:
            raise IntegrityError(f"sealed value for {aad.split(':')[0]} failed its integrity check") from None

    @staticmethod
    def kid_of(sealed: bytes) -> tuple[str, bytes]:
        if len(sealed) < 2 + 12 + 16 or sealed[0] != VERSION:
            raise IntegrityError("not a sealed value")
        n = sealed[1]
        head = sealed[:2 + n]
        try:
            return head[2:].decode("ascii"), head
        except UnicodeDecodeError:
            raise IntegrityError("not a sealed value") from None

    def _cipher(self, secret: bytes) -> AESGCM:
        cipher = self._ciphers.get(secret)
        if cipher is None:
            cipher = self._ciphers[secret] = AESGCM(secret)
        return cipher

    @staticmethod
    def _secret(key: MasterKey, purpose: str) -> bytes:
        return key.wrap_key if purpose == "wrap" else key.column_key

    def wrap(self, secret: bytes, aad: str) -> bytes:
        return self.seal(secret, aad, purpose="wrap")

    def unwrap(self, wrapped: bytes, aad: str) -> bytes:
        return self.open(wrapped, aad, purpose="wrap")

    # -- blind indexes -----------------------------------------------------
    def blind_index(self, value: str) -> str:
        return self._index(self.newest, value)

    def blind_indexes(self, value: str) -> list[str]:
        """The value's index under every key: rows not yet rotated still match."""
        return [self._index(k, value) for k in reversed(self.keys)]

    @staticmethod
    def _index(key: MasterKey, value: str) -> str:
        digest = hmac.new(key.index_key, value.encode(), hashlib.sha256).hexdigest()
        return f"{key.kid}:{digest}"


def new_kid() -> str:
    # Key files are ordered by name, so ids sort by creation time.
    return "k" + datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")


def write_key_file(keys_dir: Path, kid: str | None = None) -> str:
    """Create a new master key file (mode 0600) and return its id."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    kid = kid or new_kid()
    existing = sorted(p.stem for p in keys_dir.glob("*.key"))
    if existing and kid <= existing[-1]:
        raise KeyringError(f"new key id {kid} would not sort after {existing[-1]}")
    fd = os.open(keys_dir / f"{kid}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return kid


def parse_key_list(text: str) -> list[MasterKey]:
    keys = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        kid, sep, b64 = item.partition(":")
        if not sep or not KID_RE.match(kid):
            raise KeyringError("PROTECT_MASTER_KEYS must read kid:base64[,kid:base64...]")
        try:
            keys.append(MasterKey.from_secret(kid, base64.b64decode(b64, validate=True)))
        except binascii.Error:
            raise KeyringError(f"master key {kid} is not valid base64") from None
    return keys


def load_keyring(instance: Path, env_keys: str = "") -> Keyring:
    if env_keys:
        return Keyring(parse_key_list(env_keys))
    keys_dir = instance / "keys"
    files = sorted(keys_dir.glob("*.key")) if keys_dir.exists() else []
    if not files:
        write_key_file(keys_dir)
        files = sorted(keys_dir.glob("*.key"))
    keys = []
    for path in files:
        if not KID_RE.match(path.stem):
            raise KeyringError(f"{path.name}: a key file is named <kid>.key")
        try:
            keys.append(MasterKey.from_secret(path.stem, base64.b64decode(path.read_text().strip(), validate=True)))
        except binascii.Error:
            raise KeyringError(f"{path.name} is not valid base64") from None
    return Keyring(keys)
