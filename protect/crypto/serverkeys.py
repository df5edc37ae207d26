"""The server's own age identities, one per purpose (e.g. case evidence).

The X25519 secret is wrapped by the master key (sealed with the wrapping
key, bound to its row) and never stored in the clear; the public recipient
is plain. An identity is made on first use.
"""
from __future__ import annotations

from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import Model, Session
from . import agefile
from .columns import Ciphertext, RowId, sealed


class ServerKey(RowId, Model):
    __tablename__ = "server_keys"

    purpose: Mapped[str] = mapped_column(String(32), unique=True)
    recipient: Mapped[str] = mapped_column(String(100))
    secret_ct: Mapped[bytes] = mapped_column("secret", Ciphertext)
    secret = sealed("secret_ct", binary=True, purpose="wrap")


def _key(session: Session, purpose: str) -> ServerKey:
    key = session.execute(select(ServerKey).where(ServerKey.purpose == purpose)).scalar_one_or_none()
    if key is not None:
        return key
    secret, recipient = agefile.generate_identity()
    key = ServerKey(purpose=purpose, recipient=recipient)
    key.secret = secret.encode()
    try:
        with session.begin_nested():
            session.add(key)
    except IntegrityError:  # another process made it first
        return session.execute(select(ServerKey).where(ServerKey.purpose == purpose)).scalar_one()
    return key


def recipient(session: Session, purpose: str) -> str:
    return _key(session, purpose).recipient


def identity(session: Session, purpose: str) -> str:
    return _key(session, purpose).secret.decode()
