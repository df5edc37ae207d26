"""Duress, the two-supervisor incident trigger, release requests with a veto
window, and concurrent sweeps."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from protect.errors import DomainError, NotFound, PermissionDenied
from protect.extensions import db, utcnow
from protect.vault import service as vs
from protect.vault.models import Release, VaultEvent, VaultIncident
from protect.vault.service import Schedule

from .conftest import DURESS, PIN, audits, make_vault, note_count, notes, open_case


def sweep():
    result = vs.sweep(db.session)
    db.session.expire_all()
    return result


def owner_sees(people, vault):
    """Everything the owner's pages may show (time-independent parts of it)."""
    view = vs.owner_view(vault)
    return (view, [(e.kind, e.at, e.actor_id) for e in vs.timeline(db.session, people["journalist"], vault)])


# -- duress --------------------------------------------------------------------

@pytest.mark.parametrize("duress_action", ["alert", "alert_and_release"])
def test_duress_check_in_looks_like_a_normal_one(people, clock, duress_action):
    schedule = Schedule(duress_action=duress_action)
    normal = make_vault(people, schedule=schedule)
    coerced = make_vault(people, schedule=schedule)
    clock.advance(days=2)
    shown_normal = vs.check_in(db.session, normal, PIN)
    shown_duress = vs.check_in(db.session, coerced, DURESS)
    db.session.commit()
    assert shown_duress == shown_normal  # equal objects: same action, state, next due
    assert shown_duress.state == "armed" and shown_duress.next_due_at == utcnow() + timedelta(days=7)
    # The owner's pages show the same (vault ids aside).
    (view_n, timeline_n), (view_d, timeline_d) = owner_sees(people, normal), owner_sees(people, coerced)
    assert view_n == view_d
    assert timeline_n == timeline_d
    # Silently: the security record, and every supervisor alerted (no names).
    (entry,) = audits("vault.duress")
    assert entry.target == coerced.id and "check_in" in entry.details
    alerts = notes("vault_duress")
    assert {n.user_id for n in alerts} == {people["supervisor"].id, people["supervisor2"].id}
    assert all(set(n.data) == {"vault", "journalist", "via"} for n in alerts)
    assert not notes(user_id=people["journalist"].id)
    if duress_action == "alert":
        assert coerced.state == "armed"
        assert audits("vault.checked_in")[0].target == normal.id
    else:
        assert coerced.state == "pending_release" and coerced.release_cause == "duress"
        assert vs.shown_state(coerced) == "armed"
        result = sweep()
        assert result.released == 1 and coerced.state == "released"
        assert db.session.execute(select(func.count()).select_from(Release)
                                  .where(Release.vault_id == coerced.id)).scalar_one() == 1
        # Staff are told of the release; the owner (whose phone a captor may hold) is not.
        told = {n.user_id for n in notes("vault_released")}
        assert people["journalist"].id not in told and people["supervisor"].id in told
        assert owner_sees(people, coerced)[0] == owner_sees(people, normal)[0]
        # A later check-in (the captor again) still looks normal, and alerts again.
        clock.advance(days=1)
        again_normal = vs.check_in(db.session, normal, PIN)
        again_duress = vs.check_in(db.session, coerced, DURESS)
        db.session.commit()
        assert again_duress == again_normal and coerced.state == "released"
        assert len(audits("vault.duress")) == 2
        assert owner_sees(people, coerced)[0] == owner_sees(people, normal)[0]


def test_both_pins_are_always_verified(people, monkeypatch):
    vault = make_vault(people)
    calls = []
    real = vs.verify_password
    monkeypatch.setattr(vs, "verify_password", lambda stored, pin: calls.append(stored) or real(stored, pin))
    for pin in (PIN, DURESS):
        calls.clear()
        vs.check_in(db.session, vault, pin)
        assert calls == [vault.pin_hash, vault.duress_pin_hash]
    calls.clear()
    with pytest.raises(vs.WrongPin):
        vs.check_in(db.session, vault, "000000")
    assert calls == [vault.pin_hash, vault.duress_pin_hash]


def test_duress_pause_and_disarm_alert(people, clock):
    vault = make_vault(people)
    shown = vs.pause(db.session, vault, DURESS, utcnow() + timedelta(days=2))
    db.session.commit()
    assert shown.state == vault.state == "paused"
    shown = vs.disarm(db.session, vault, DURESS)
    db.session.commit()
    assert shown.state == vault.state == "disarmed"
    assert [e.details for e in audits("vault.duress")] == ['{"duress_action": "alert", "via": "pause"}',
                                                          '{"duress_action": "alert", "via": "disarm"}']


def test_duress_disarm_with_release_keeps_the_cover(people, clock):
    vault = make_vault(people, schedule=Schedule(duress_action="alert_and_release"))
    shown = vs.disarm(db.session, vault, DURESS)
    db.session.commit()
    assert shown.state == "disarmed" and vs.shown_state(vault) == "disarmed"
    assert vault.state == "pending_release"
    sweep()
    assert vault.state == "released" and vs.owner_view(vault).state == "disarmed"
    # The owner's list of events shows a disarm, nothing of the release.
    kinds = [e.kind for e in vs.timeline(db.session, people["journalist"], vault)]
    assert kinds[-1] == "disarmed" and "released" not in kinds and "release_started" not in kinds
    # Re-arming "works" as far as the page shows.
    vs.arm(db.session, vault, PIN)
    db.session.commit()
    assert vs.shown_state(vault) == "armed" and vault.state == "released"


# -- incident trigger ----------------------------------------------------------

def test_incident_needs_two_different_supervisors(people, clock):
    j, s1, s2 = people["journalist"], people["supervisor"], people["supervisor2"]
    armed = make_vault(people)
    paused = make_vault(people)
    vs.pause(db.session, paused, PIN, utcnow() + timedelta(days=3))
    draft = make_vault(people, armed=False)
    others = make_vault(people, owner=people["other_journalist"])
    db.session.commit()

    with pytest.raises(PermissionDenied):
        vs.report_incident(db.session, people["caseworker"], j, "disappearance", "No contact for 3 days")
    with pytest.raises(DomainError):
        vs.report_incident(db.session, s1, j, "kidnap", "x")
    incident = vs.report_incident(db.session, s1, j, "disappearance", "Sin contacto desde el lunes; su familia lo denunció")
    db.session.commit()
    # One supervisor alone: nothing happens, however long.
    clock.advance(hours=1)
    sweep()
    assert armed.state == "armed" and paused.state == "paused"
    assert [n.user_id for n in notes("vault_incident_reported")] == [s2.id]
    with pytest.raises(PermissionDenied):
        vs.confirm_incident(db.session, s1, incident, "I confirm my own report")
    with pytest.raises(DomainError):
        vs.report_incident(db.session, s2, j, "killing", "A second report")
    db.session.rollback()
    assert incident.state == "reported" and armed.state == "armed"

    started = vs.confirm_incident(db.session, s2, incident, "Confirmado con la fiscalía estatal")
    db.session.commit()
    assert started == 2
    assert armed.state == paused.state == "pending_release"
    assert armed.release_cause == "incident" and draft.state == "draft" and others.state == "armed"
    # A captor with the phone sees nothing change.
    assert vs.shown_state(armed) == "armed" and vs.shown_state(paused) == "paused"
    result = sweep()
    assert result.released == 2 and armed.state == paused.state == "released"
    with pytest.raises(DomainError):
        vs.confirm_incident(db.session, people["supervisor"], incident, "again")
    # Both steps audited with the reason's length only; the reasons are sealed in the row.
    (reported,), (confirmed,) = audits("vault.incident_reported"), audits("vault.incident_confirmed")
    assert reported.actor_id == s1.id and confirmed.actor_id == s2.id
    assert "lunes" not in reported.details and '"reason_length": 51' in reported.details
    db.session.expire_all()
    row = db.session.get(VaultIncident, incident.id)
    assert row.report_reason.startswith("Sin contacto") and b"lunes" not in row.report_reason_ct
    # The captor checking in afterwards still sees a normal check-in.
    shown = vs.check_in(db.session, armed, PIN)
    assert shown.state == "armed" and armed.state == "released"


# -- release requests with a veto window --------------------------------------

def test_release_request_refused_with_the_pin(people, clock):
    open_case(people)
    vault = make_vault(people)
    cw = people["caseworker"]
    with pytest.raises(PermissionDenied):  # not her caseworker
        vs.request_release(db.session, people["caseworker2"], vault, "reason")
    with pytest.raises(PermissionDenied):
        vs.request_release(db.session, people["supervisor"], vault, "reason")
    vs.request_release(db.session, cw, vault, "Su editor perdió contacto con ella")
    db.session.commit()
    assert vault.state == "pending_release" and vault.release_cause == "request"
    assert vault.release_after == utcnow() + timedelta(hours=72)
    assert vs.owner_view(vault).state == "pending_release"
    assert vs.owner_view(vault).release_after == vault.release_after
    (told,) = notes("vault_release_requested")
    assert told.user_id == people["journalist"].id
    with pytest.raises(DomainError):
        vs.request_release(db.session, cw, vault, "twice")
    clock.advance(hours=48)
    result = sweep()  # 24 h before the window closes: a reminder
    assert result.veto_reminded == 1 and result.released == 0
    assert sweep().notifications == 0
    with pytest.raises(vs.WrongPin):
        vs.refuse_release(db.session, vault, "000000")
    shown = vs.refuse_release(db.session, vault, PIN)
    db.session.commit()
    assert shown.state == vault.state == "armed" and vault.release_cause is None
    assert vault.release_reason is None and vault.next_due_at == utcnow() + timedelta(days=7)
    (refused,) = notes("vault_release_refused")
    assert refused.user_id == cw.id
    clock.advance(hours=25)
    assert sweep().released == 0 and vault.state == "armed"
    with pytest.raises(DomainError):
        vs.refuse_release(db.session, vault, PIN)


@pytest.mark.parametrize("duress_action", ["alert", "alert_and_release"])
def test_release_request_refused_with_the_duress_pin(people, clock, duress_action):
    open_case(people)
    schedule = Schedule(duress_action=duress_action)
    normal, coerced = make_vault(people, schedule=schedule), make_vault(people, schedule=schedule)
    for vault in (normal, coerced):
        vs.request_release(db.session, people["caseworker"], vault, "No answer for days")
    db.session.commit()
    clock.advance(hours=5)
    shown_normal = vs.refuse_release(db.session, normal, PIN)
    shown_duress = vs.refuse_release(db.session, coerced, DURESS)
    db.session.commit()
    assert shown_duress == shown_normal and shown_duress.action == "release_refused"
    assert owner_sees(people, coerced)[0] == owner_sees(people, normal)[0]
    assert {n.user_id for n in notes("vault_duress")} == {people["supervisor"].id, people["supervisor2"].id}
    assert len(notes("vault_release_refused")) == 1  # the caseworker hears of the real refusal only
    if duress_action == "alert":
        assert coerced.state == "armed"
        assert sweep().released == 0
    else:
        assert coerced.state == "pending_release" and coerced.release_cause == "duress"
        assert sweep().released == 1 and coerced.state == "released" and normal.state == "armed"


def test_unanswered_release_request_releases(people, clock):
    j = people["journalist"]
    vault = make_vault(people, schedule=Schedule(veto_hours=24))
    recipient = vault.recipients[0]
    vs.request_release(db.session, recipient, vault, "The reporter missed our weekly call")
    db.session.commit()
    assert vault.release_requested_by_recipient_id == recipient.id
    assert vault.next_reminder_at is None  # a 24 h window gets no extra reminder
    # Without a caseworker, the supervisors hear of a recipient's request too.
    assert {n.user_id for n in notes("vault_release_requested")} == {
        j.id, people["supervisor"].id, people["supervisor2"].id}
    other = make_vault(people)
    with pytest.raises(NotFound):  # a recipient of another vault
        vs.request_release(db.session, other.recipients[0], vault, "x")
    clock.advance(hours=23, minutes=59)
    assert sweep().released == 0
    clock.advance(minutes=1)
    result = sweep()
    assert result.released == 1 and vault.state == "released" and vault.release_cause == "request"
    assert j.id in {n.user_id for n in notes("vault_released")}
    assert [a.details for a in audits("vault.release_requested")][0].count("The reporter") == 0


def test_check_in_during_a_request_refuses_it(people, clock):
    open_case(people)
    vault = make_vault(people)
    vs.request_release(db.session, people["caseworker"], vault, "reason")
    db.session.commit()
    vs.check_in(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed" and vault.release_cause is None
    kinds = [e.kind for e in vs.timeline(db.session, people["journalist"], vault)]
    assert kinds[-2:] == ["checked_in", "release_refused"]


# -- concurrency ---------------------------------------------------------------

def test_concurrent_sweeps_write_each_notification_once(app, people, clock):
    open_case(people)
    vaults = [make_vault(people) for _ in range(4)]
    vs.request_release(db.session, people["caseworker"], vaults[0], "reason")
    db.session.commit()
    clock.advance(days=9, seconds=1)
    results, errors = [], []

    def run():
        with app.app_context():
            try:
                results.append(vs.sweep(db.session))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.released for r in results) == 4
    assert sum(r.grace for r in results) == 3
    db.session.expire_all()
    assert db.session.execute(select(func.count()).select_from(Release)).scalar_one() == 4
    # 3 vaults: grace (journalist + caseworker) and released (both); the requested one: released to both.
    assert note_count() == 3 * 4 + 2 + 1  # + the request notice
    assert sum(r.notifications for r in results) == 3 * 4 + 2
    released_events = db.session.execute(select(func.count()).select_from(VaultEvent)
                                         .where(VaultEvent.kind == "released")).scalar_one()
    assert released_events == 4
    assert len(audits("vault.released")) == 4
