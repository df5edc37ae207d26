"""Argon2id password hashing and the rules for new passwords."""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from flask_babel import lazy_gettext as _l

MIN_LENGTH = 12
MAX_LENGTH = 256
# 20,000 common passwords (from Django's password validation, BSD licence).
COMMON_LIST = Path(__file__).with_name("common-passwords.txt.gz")

def hasher() -> PasswordHasher:
    s = current_app.extensions["protect.settings"]
    return _hasher(s.argon2_time_cost, s.argon2_memory_kib, s.argon2_parallelism)


@lru_cache(maxsize=4)
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism)


@lru_cache(maxsize=4)
def _dummy_hash(ph: PasswordHasher) -> str:
    """Verified against when no account matches, so a failed login costs
    the same time whether or not the account exists."""
    return ph.hash("no such account")


def hash_password(password: str) -> str:
    return hasher().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    ph = hasher()
    try:
        return ph.verify(stored or _dummy_hash(ph), password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return hasher().check_needs_rehash(stored)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_LIST, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip().lower() for line in fh if line.strip())


def password_problems(password: str) -> list[str]:
    """Translated reasons a new password is refused; empty when it is fine."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append(_l("Use at least %(n)d characters.", n=MIN_LENGTH))
    if len(password) > MAX_LENGTH:
        problems.append(_l("Use at most %(n)d characters.", n=MAX_LENGTH))
    if password.strip().lower() in common_passwords():
        problems.append(_l("This password is too common; choose another."))
    return problems
