"""Encrypted columns, blind indexes and master-key rotation, on both databases."""
import pytest
from sqlalchemy import text

from protect.accounts import service
from protect.accounts.models import User
from protect.crypto import rotation
from protect.crypto.keyring import IntegrityError
from protect.extensions import db
from tests.conftest import login

MARKER = "Reportera-Secreta-7Q2"


def _make(email, name=None):
    user, _ = service.create_user(db.session, None, email=email, role="journalist",
                                  password="a long test password", name=name)
    db.session.commit()
    return user.id


def _fresh(user_id):
    db.session.expire_all()
    db.session.expunge_all()
    return db.session.get(User, user_id)


def test_round_trip_and_blind_index_lookup(app, ctx):
    uid = _make("Ana@Example.org", name=MARKER)
    user = _fresh(uid)
    assert user.email == "Ana@Example.org" and user.name == MARKER
    assert service.find_by_email(db.session, "  ana@example.ORG ").id == uid
    assert service.find_by_email(db.session, "ana@example.net") is None


def test_flipped_byte_is_an_integrity_error(app, ctx):
    uid = _make("flip@example.org")
    raw = bytearray(db.session.execute(text("SELECT email FROM users")).scalar_one())
    raw[-3] ^= 1
    db.session.execute(text("UPDATE users SET email = :v"), {"v": bytes(raw)})
    db.session.commit()
    with pytest.raises(IntegrityError, match="integrity"):
        _ = _fresh(uid).email  # opening the sealed value is what fails


def test_ciphertext_moved_to_another_row_or_column_fails(app, ctx):
    a, b = _make("a@example.org", name="Alpha"), _make("b@example.org", name="Beta")
    a_email = db.session.execute(text("SELECT email FROM users WHERE id = :id"), {"id": a}).scalar_one()
    db.session.execute(text("UPDATE users SET email = :v WHERE id = :id"), {"v": a_email, "id": b})
    db.session.execute(text("UPDATE users SET name = :v WHERE id = :id"), {"v": a_email, "id": a})
    db.session.commit()
    with pytest.raises(IntegrityError):
        _ = _fresh(b).email
    with pytest.raises(IntegrityError):
        _ = _fresh(a).name


def test_plaintext_never_reaches_the_database(app, ctx):
    _make(f"{MARKER.lower()}@example.org", name=MARKER)
    db.session.commit()
    if db.engine.dialect.name == "sqlite":
        db.session.execute(text("PRAGMA wal_checkpoint(FULL)"))
        path = db.engine.url.database
        blob = b"".join(open(p, "rb").read() for p in (path, path + "-wal") if __import__("os").path.exists(p))
        assert MARKER.encode() not in blob and MARKER.lower().encode() not in blob
    else:
        for table in db.metadata.tables:
            dump = db.session.execute(text(f"SELECT CAST(t AS text) FROM {table} t")).scalars().all()
            assert not any(MARKER.lower() in row.lower() for row in dump)
            hexed = MARKER.encode().hex()
            assert not any(hexed in row for row in dump)


def test_rotation_round_trip_resume_and_retire(app, client, make_account):
    accounts = [make_account("journalist") for _ in range(7)]
    runner = app.test_cli_runner()
    with app.app_context():
        old = app.extensions["protect.keyring"].newest.kid

    # Interrupted after the first batch, then resumed.
    with app.app_context():
        from protect.crypto import keyring as keyring_mod
        settings = app.extensions["protect.settings"]
        keyring_mod.write_key_file(settings.instance / "keys")
        ring = keyring_mod.load_keyring(settings.instance)
        app.extensions["protect.keyring"] = ring

        def stop(column, done, changed):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            rotation.rotate(db.session, db.Model, ring, batch=3, progress=stop)
        counts = rotation.usage(db.session, db.Model)
        assert counts[ring.newest.kid] == 3 and counts[old] > 0
        db.session.remove()

    refused = runner.invoke(args=["protect", "rotate-keys", "--retire", old])
    assert refused.exit_code != 0 and "still seals" in refused.output
    resumed = runner.invoke(args=["protect", "rotate-keys", "--no-new-key", "--batch", "3"])
    assert resumed.exit_code == 0, resumed.output
    with app.app_context():
        ring = app.extensions["protect.keyring"]
        assert set(rotation.usage(db.session, db.Model)) == {ring.newest.kid}
    retired = runner.invoke(args=["protect", "rotate-keys", "--retire", old])
    assert retired.exit_code == 0, retired.output
    with app.app_context():
        from protect.crypto import keyring as keyring_mod
        app.extensions["protect.keyring"] = keyring_mod.load_keyring(app.extensions["protect.settings"].instance)
        assert old not in {k.kid for k in app.extensions["protect.keyring"].keys}
        users = db.session.query(User).all()
        assert sorted(u.email for u in users) == sorted(a.email for a in accounts)
    # Sign-in by e-mail still works: the blind index moved to the new key too.
    assert login(client, accounts[0]).status_code == 302


def test_full_cli_rotation_adds_a_key(app, make_account):
    make_account("caseworker")
    result = app.test_cli_runner().invoke(args=["protect", "rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "new master key" in result.output and "re-sealed" in result.output
    with app.app_context():
        ring = app.extensions["protect.keyring"]
        assert len(ring.keys) == 2
        assert set(rotation.usage(db.session, db.Model)) == {ring.newest.kid}


def test_keys_from_environment(tmp_path):
    import base64
    import os

    from protect.crypto.keyring import KeyringError, load_keyring, parse_key_list
    k1, k2 = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    ring = load_keyring(tmp_path, f"old:{k1},new:{k2}")
    assert [k.kid for k in ring.keys] == ["old", "new"] and not (tmp_path / "keys").exists()
    sealed = load_keyring(tmp_path, f"old:{k1}").seal(b"x", "t.c:1")
    assert ring.open(sealed, "t.c:1") == b"x"
    for bad in ("nokid", "k:!!!", f"bad kid:{k1}", "k:" + base64.b64encode(b"short").decode()):
        with pytest.raises(KeyringError):
            parse_key_list(bad)
