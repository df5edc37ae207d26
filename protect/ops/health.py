"""Is the database answering, is the blob store reachable: for /readyz and the doctor.

Each check returns None when all is well, else a short description for an
operator (an error's class and message: never data).
"""
from __future__ import annotations

import logging
import os

import botocore.exceptions
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..crypto.blobs import BlobStore, LocalBlobStore, S3BlobStore
from ..extensions import db

log = logging.getLogger(__name__)


def database_problem() -> str | None:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        cause = getattr(exc, "orig", None) or exc  # the driver's error says what failed
        return f"{type(cause).__name__}: {str(cause).splitlines()[0]}"
    finally:
        db.session.remove()
    return None


def blob_store_problem(store: BlobStore) -> str | None:
    """One cheap call: a directory writable by this process, or a HEAD on the bucket."""
    if isinstance(store, LocalBlobStore):
        for path in (store.root, store.tmp):
            if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
                return f"{path} is not a directory this process can write to"
        return None
    if isinstance(store, S3BlobStore):
        try:
            store.client.head_bucket(Bucket=store.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            return f"bucket {store.bucket}: S3 answered {code}"
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            return f"S3 endpoint unreachable: {type(exc).__name__}"
        except botocore.exceptions.BotoCoreError as exc:  # no credentials, bad configuration
            return f"S3 client: {type(exc).__name__}"
        return None
    return f"unknown blob store {type(store).__name__}"
