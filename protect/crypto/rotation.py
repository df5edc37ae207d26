"""Master-key rotation: re-seal every sealed column under the newest key.

Work goes table by table in id-ordered batches, one transaction per batch.
A value already under the newest key is left alone, so an interrupted run
simply starts again and finishes the rest. A key may be retired only when
no sealed value names it any more.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Row, bindparam, select

from ..extensions import Session
from .columns import aad_for, sealed_attributes
from .keyring import Keyring


def _batches(session: Session, model, column: str, batch: int) -> Iterator[Sequence[Row]]:
    pk = model.id
    col = getattr(model, column)
    last = None
    while True:
        query = select(pk, col).where(col.is_not(None)).order_by(pk).limit(batch)
        if last is not None:
            query = query.where(pk > last)
        rows = session.execute(query).all()
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _columns(base):
    for model, attr in sealed_attributes(base):
        yield model, attr, getattr(model, attr.column).property.columns[0].name


def usage(session: Session, base) -> Counter:
    """How many sealed values each key id holds."""
    counts: Counter = Counter()
    for model, attr, _name in _columns(base):
        for rows in _batches(session, model, attr.column, 1000):
            counts.update(Keyring.kid_of(ct)[0] for _id, ct in rows)
    return counts


def rotate(session: Session, base, ring: Keyring, *, batch: int = 500,
           progress: Callable[[str, int, int], None] = lambda table, done, changed: None) -> int:
    """Re-seal (and re-index) every value not under the newest key; returns how many."""
    newest = ring.newest.kid
    total = 0
    for model, attr, name in _columns(base):
        table = model.__tablename__
        done = changed = 0
        for rows in _batches(session, model, attr.column, batch):
            updates = []
            for row_id, ct in rows:
                if ring.kid_of(ct)[0] == newest:
                    continue
                aad = aad_for(table, attr.column, row_id)
                plain = ring.open(ct, aad, purpose=attr.purpose)
                values = {"id": row_id, attr.column: ring.seal(plain, aad, purpose=attr.purpose)}
                if attr.index:
                    text = plain if attr.binary else plain.decode()
                    values[attr.index] = ring.blind_index(attr.normalise(text))
                updates.append(values)
            if updates:
                table_ = model.__table__
                statement = table_.update().where(table_.c.id == bindparam("b_id")).values(
                    {getattr(model, k).property.columns[0].name: bindparam(f"b_{k}")
                     for k in updates[0] if k != "id"})
                session.execute(statement, [{f"b_{k}": v for k, v in u.items()} for u in updates])
                session.commit()
            done += len(rows)
            changed += len(updates)
            progress(f"{table}.{name}", done, changed)
        total += changed
    return total
