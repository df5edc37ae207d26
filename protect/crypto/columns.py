"""Encrypted columns and blind indexes.

A personal-data attribute is stored sealed (AES-256-GCM under the newest
master key) in a ``Ciphertext`` column. The associated data binds each value
to its table, column and row id, so a ciphertext copied into another row or
column fails to open. Since a row must have its id before a value is sealed,
models holding sealed columns use ``RowId`` (ids made in Python, random).

Exact look-ups (e-mail at login) go through a blind index: an HMAC of the
normalised value under a key derived separately from the same master key.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable

from flask import current_app
from sqlalchemy import LargeBinary, String, TypeDecorator
from sqlalchemy.orm import Mapped, mapped_column

from .keyring import Keyring


class Ciphertext(TypeDecorator):
    """Raw sealed bytes; refuses plaintext so nothing is stored unsealed by mistake."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and (not isinstance(value, bytes) or value[:1] != b"\x01"):
            raise ValueError("only sealed values go into a Ciphertext column")
        return value


def keyring() -> Keyring:
    return current_app.extensions["protect.keyring"]


def new_row_id() -> str:
    return secrets.token_hex(16)


class RowId:
    """Primary key made in Python, so sealed values can be bound to their row."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True)

    def __init__(self, **kwargs):
        super().__init__(id=kwargs.pop("id", None) or new_row_id(), **kwargs)


def aad_for(table: str, column: str, row_id: str) -> str:
    return f"{table}.{column}:{row_id}"


class sealed:
    """Descriptor giving the plaintext of a ``Ciphertext`` column.

    ``index`` names a blind-index column kept in step, and ``normalise``
    the form the index is computed on (e.g. lower-cased e-mail). With
    ``binary`` the plaintext is bytes (wrapped keys) rather than text, and
    ``purpose="wrap"`` seals under the key-wrapping key.
    """

    def __init__(self, column: str, *, index: str | None = None,
                 normalise: Callable[[str], str] = lambda v: v,
                 binary: bool = False, purpose: str = "columns"):
        self.column = column
        self.index = index
        self.normalise = normalise
        self.binary = binary
        self.purpose = purpose

    def __set_name__(self, owner, name):
        self.name = name
        self.owner = owner

    def _aad(self, obj) -> str:
        if not obj.id:
            raise ValueError("row id must be set before sealing")
        return aad_for(obj.__tablename__, self.column, obj.id)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        ct = getattr(obj, self.column)
        if ct is None:
            return None
        cache = obj.__dict__.get(f"_plain_{self.name}")
        if cache is not None and cache[0] == ct:
            return cache[1]
        plain = keyring().open(ct, self._aad(obj), purpose=self.purpose)
        plain = plain if self.binary else plain.decode()
        obj.__dict__[f"_plain_{self.name}"] = (ct, plain)
        return plain

    def __set__(self, obj, value: str | bytes | None):
        if value is None:
            setattr(obj, self.column, None)
            if self.index:
                setattr(obj, self.index, None)
            return
        if isinstance(value, bytes) != self.binary:
            raise TypeError(f"{self.name} holds {'bytes' if self.binary else 'text'}")
        ring = keyring()
        ct = ring.seal(value if isinstance(value, bytes) else value.encode(), self._aad(obj), purpose=self.purpose)
        setattr(obj, self.column, ct)
        obj.__dict__[f"_plain_{self.name}"] = (ct, value)
        if self.index and not isinstance(value, bytes):  # (binary values have no index)
            setattr(obj, self.index, ring.blind_index(self.normalise(value)))

    def lookup(self, model, value: str):
        """A WHERE clause matching ``value`` under any master key in use."""
        if self.index is None:
            raise TypeError(f"{self.name} has no blind index")
        return getattr(model, self.index).in_(keyring().blind_indexes(self.normalise(value)))


def sealed_attributes(model_base) -> list[tuple[type, sealed]]:
    """Every sealed attribute of every mapped model (for rotation and retirement)."""
    found = []
    for mapper in model_base.registry.mappers:
        for klass in mapper.class_.__mro__:
            for value in vars(klass).values():
                if isinstance(value, sealed) and value.owner is klass:
                    found.append((mapper.class_, value))
    return sorted(found, key=lambda item: (item[0].__tablename__, item[1].column))
