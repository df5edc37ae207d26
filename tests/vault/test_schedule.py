"""The check-in schedule: every path of the state machine, driven by the sweep
with the injectable clock (never sleeping)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from protect.errors import DomainError, PermissionDenied
from protect.extensions import db, utcnow
from protect.vault import service as vs
from protect.vault.models import Release, VaultEvent
from protect.vault.service import Schedule

from .conftest import DURESS, PIN, audits, make_vault, note_count, notes, open_case


def sweep():
    result = vs.sweep(db.session)
    db.session.expire_all()
    return result


def test_armed_reminded_grace_released(people, clock):
    open_case(people)
    vault = make_vault(people)
    j, cw = people["journalist"], people["caseworker"]
    assert vault.state == "armed"
    due = vault.next_due_at
    assert due == utcnow() + timedelta(days=7)
    assert vault.grace_until == due + timedelta(hours=48)

    clock.advance(days=5)
    assert sweep().reminded == 0  # nothing due yet
    clock.advance(days=1, minutes=1)  # 23 h 59 min before due: the 24 h reminder
    result = sweep()
    assert result.reminded == 1 and result.notifications == 1
    assert vault.state == "reminded"
    (reminder,) = notes("vault_reminder")
    assert reminder.user_id == j.id and reminder.data["hours"] == 24
    assert sweep().notifications == 0  # the same threshold is never sent twice

    clock.advance(hours=22)  # 1 h 59 min before due: the 2 h reminder
    result = sweep()
    assert result.reminded == 1 and [n.data["hours"] for n in notes("vault_reminder")] == [24, 2]
    assert vault.next_reminder_at is None

    clock.advance(hours=2)  # past due: grace; the journalist and the caseworker are told
    result = sweep()
    assert result.grace == 1 and vault.state == "grace"
    assert {n.user_id for n in notes("vault_grace")} == {j.id, cw.id}

    clock.advance(hours=47)
    assert sweep().pending_release == 0 and vault.state == "grace"
    clock.advance(hours=1, seconds=1)
    result = sweep()
    assert result.pending_release == 1 and result.released == 1
    assert vault.state == "released" and vault.release_cause == "missed_checkin"
    assert vault.release_after == vault.grace_until
    assert vs.shown_state(vault) == "released"  # not concealed: the journalist may see it
    (release,) = db.session.execute(select(Release)).scalars()
    assert release.expires_at == utcnow() + timedelta(days=30) and release.token_hash is None
    assert {n.user_id for n in notes("vault_released")} == {j.id, cw.id}
    kinds = [e.kind for e in vs.timeline(db.session, j, vault)]
    assert kinds[-5:] == ["reminded", "reminded", "grace", "release_started", "released"]
    assert [a.target for a in audits("vault.released")] == [vault.id]
    total = note_count()
    clock.advance(days=3)
    assert sweep().notifications == 0 and note_count() == total
    with pytest.raises(DomainError):
        vs.check_in(db.session, vault, PIN)


def test_check_in_during_grace_rearms(people, clock):
    vault = make_vault(people)
    clock.advance(days=7, hours=1)
    sweep()
    assert vault.state == "grace"
    outcome = vs.check_in(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed" and outcome.state == "armed"
    assert vault.next_due_at == utcnow() + timedelta(days=7) == outcome.next_due_at
    assert vault.last_checkin_at == utcnow()
    clock.advance(days=2)  # the old grace end passes: nothing happens
    assert sweep().pending_release == 0 and vault.state == "armed"


def test_supervisors_get_grace_notice_when_no_caseworker(people, clock):
    vault = make_vault(people)
    clock.advance(days=7, seconds=1)
    sweep()
    users = {n.user_id for n in notes("vault_grace")}
    assert users == {people["journalist"].id, people["supervisor"].id, people["supervisor2"].id}
    assert vault.state == "grace"


def test_welfare_hold_confirmed_rearms(people, clock):
    open_case(people)
    vault = make_vault(people, schedule=Schedule(after_grace="welfare_hold", welfare_hold_hours=24))
    clock.advance(days=9, seconds=1)  # due (7 d) + grace (48 h)
    result = sweep()
    assert result.grace == 1 and result.welfare_hold == 1 and result.released == 0
    assert vault.state == "welfare_hold"
    assert {n.user_id for n in notes("vault_welfare_hold")} == {people["journalist"].id, people["caseworker"].id}
    with pytest.raises(PermissionDenied):  # another caseworker may not
        vs.confirm_welfare(db.session, people["caseworker2"], vault)
    vs.confirm_welfare(db.session, people["caseworker"], vault)
    db.session.commit()
    assert vault.state == "armed" and vault.next_due_at == utcnow() + timedelta(days=7)
    clock.advance(days=1, seconds=1)  # the old hold end passes
    assert sweep().released == 0 and vault.state == "armed"
    assert [a.actor_id for a in audits("vault.welfare_confirmed")] == [people["caseworker"].id]


def test_welfare_hold_expires_and_releases(people, clock):
    open_case(people)
    vault = make_vault(people, schedule=Schedule(after_grace="welfare_hold", welfare_hold_hours=24))
    clock.advance(days=9, seconds=1)
    sweep()
    assert vault.state == "welfare_hold" and vault.hold_until == vault.grace_until + timedelta(hours=24)
    clock.advance(hours=23)
    assert sweep().released == 0
    clock.advance(hours=1)
    result = sweep()
    assert result.pending_release == 1 and result.released == 1 and vault.state == "released"
    with pytest.raises(DomainError):
        vs.confirm_welfare(db.session, people["caseworker"], vault)


def test_journalist_checks_in_during_welfare_hold(people, clock):
    vault = make_vault(people, schedule=Schedule(after_grace="welfare_hold"))
    clock.advance(days=9, seconds=1)
    sweep()
    vs.check_in(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed"


def test_pause_and_its_expiry(people, clock):
    vault = make_vault(people, schedule=Schedule(max_pause_hours=14 * 24))
    with pytest.raises(DomainError):  # longer than the maximum
        vs.pause(db.session, vault, PIN, utcnow() + timedelta(days=15))
    with pytest.raises(DomainError):
        vs.pause(db.session, vault, PIN, utcnow() - timedelta(hours=1))
    until = utcnow() + timedelta(days=10)
    outcome = vs.pause(db.session, vault, PIN, until)
    db.session.commit()
    assert outcome.state == "paused" and outcome.paused_until == until
    assert vault.state == "paused" and vault.next_due_at == until + timedelta(days=7)

    clock.advance(days=8)  # past the original due date: a paused vault does not go to grace
    result = sweep()
    assert result.grace == 0 and result.reminded == 0 and vault.state == "paused"
    clock.advance(days=2)
    result = sweep()
    assert result.resumed == 1 and vault.state == "armed" and vault.paused_until is None
    (resumed,) = notes("vault_resumed")
    assert resumed.user_id == people["journalist"].id
    assert sweep().notifications == 0
    clock.advance(days=6, hours=1)  # the reminder computed at pause time now fires
    assert sweep().reminded == 1
    clock.advance(hours=23)
    assert sweep().grace == 1


def test_check_in_ends_a_pause_early(people, clock):
    vault = make_vault(people)
    vs.pause(db.session, vault, PIN, utcnow() + timedelta(days=3))
    db.session.commit()
    clock.advance(days=1)
    vs.check_in(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed" and vault.paused_until is None
    assert vault.next_due_at == utcnow() + timedelta(days=7)


def test_disarm_and_rearm(people, clock):
    vault = make_vault(people)
    with pytest.raises(DomainError):  # armed: the schedule cannot change
        vs.update_settings(db.session, people["journalist"], vault, Schedule(interval_hours=48))
    outcome = vs.disarm(db.session, vault, PIN)
    db.session.commit()
    assert outcome.state == vault.state == "disarmed" and vault.next_due_at is None
    clock.advance(days=30)
    assert sweep().grace == 0
    with pytest.raises(DomainError):
        vs.check_in(db.session, vault, PIN)
    vs.update_settings(db.session, people["journalist"], vault, Schedule(interval_hours=48, reminder_hours=(6,)))
    vs.arm(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed" and vault.next_due_at == utcnow() + timedelta(hours=48)
    assert vault.next_reminder_at == vault.next_due_at - timedelta(hours=6)


def test_arming_needs_pins_and_a_recipient(people):
    j = people["journalist"]
    vault = vs.create_vault(db.session, j, "Notas")
    with pytest.raises(DomainError, match="PIN"):
        vs.arm(db.session, vault, PIN)
    vs.set_pins(db.session, j, vault, pin=PIN, duress_pin=DURESS)
    with pytest.raises(DomainError, match="recipient"):
        vs.arm(db.session, vault, PIN)
    vs.add_recipient(db.session, j, vault, name="Consorcio", email="c@example.org", access_code="codigo-secreto")
    vs.arm(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed"
    with pytest.raises(DomainError):
        vs.arm(db.session, vault, PIN)


def test_pin_rules(people):
    j = people["journalist"]
    vault = vs.create_vault(db.session, j, "Notas")
    for pin, duress in (("12345", "987654"), ("123456", "123456"), ("1" * 33, "987654")):
        with pytest.raises(DomainError):
            vs.set_pins(db.session, j, vault, pin=pin, duress_pin=duress)
    vs.set_pins(db.session, j, vault, pin=PIN, duress_pin=DURESS)
    db.session.commit()
    # Changing them needs a current PIN.
    with pytest.raises(vs.WrongPin):
        vs.set_pins(db.session, j, vault, pin="111111", duress_pin="222222", current_pin="000000")
    vs.set_pins(db.session, j, vault, pin="111111", duress_pin="222222", current_pin=PIN)
    db.session.commit()
    assert vault.pin_hash.startswith("$argon2id$") and vault.duress_pin_hash.startswith("$argon2id$")


def test_schedule_bounds(people):
    j = people["journalist"]
    for bad in (Schedule(interval_hours=23), Schedule(interval_hours=91 * 24), Schedule(reminder_hours=(200,)),
                Schedule(reminder_hours=(2, 2)), Schedule(after_grace="never"), Schedule(duress_action="x"),
                Schedule(grace_hours=0), Schedule(veto_hours=1)):
        with pytest.raises(DomainError):
            vs.create_vault(db.session, j, "Notas", schedule=bad)
    vault = vs.create_vault(db.session, j, "Notas", schedule=Schedule(interval_hours=90 * 24, reminder_hours=(2, 48)))
    assert vault.reminder_hours == [48, 2]


def test_pin_throttling(people, clock):
    vault = make_vault(people)
    for _ in range(5):
        with pytest.raises(vs.WrongPin):
            vs.check_in(db.session, vault, "000000")
        db.session.rollback()  # as a view does on an error: the failures still count
    with pytest.raises(vs.PinThrottled, match="15 more minutes"):
        vs.check_in(db.session, vault, PIN)  # even the right PIN, while throttled
    with pytest.raises(vs.PinThrottled):
        vs.disarm(db.session, vault, PIN)  # every PIN action shares the count
    clock.advance(minutes=10)
    with pytest.raises(vs.PinThrottled, match="5 more minutes"):
        vs.check_in(db.session, vault, DURESS)
    clock.advance(minutes=5, seconds=1)
    vs.check_in(db.session, vault, PIN)
    db.session.commit()
    assert vault.state == "armed"
    # A success clears the count.
    for _ in range(4):
        with pytest.raises(vs.WrongPin):
            vs.check_in(db.session, vault, "000000")
    vs.check_in(db.session, vault, PIN)
    db.session.commit()


def test_a_sweep_racing_a_check_in_wins_cleanly(app, people, clock):
    """The sweep bumps the version: a check-in computed on the row as it was
    before fails as stale instead of silently undoing the release."""
    vault = make_vault(people)
    assert vault.state == "armed"  # loaded in this session, as a view would have it
    clock.advance(days=9, seconds=1)
    with app.app_context():  # another process sweeps meanwhile
        assert vs.sweep(db.session).released == 1
        db.session.remove()
    with pytest.raises(vs.StaleVault):
        vs.check_in(db.session, vault, PIN)
    db.session.rollback()
    assert vault.state == "released"


def test_repeated_sweeps_write_each_notification_once(people, clock):
    open_case(people)
    vaults = [make_vault(people) for _ in range(3)]
    for _ in range(10 * 24):  # ten days, hour by hour, sweeping twice an hour
        clock.advance(hours=1)
        vs.sweep(db.session)
        vs.sweep(db.session)
    db.session.expire_all()
    assert all(v.state == "released" for v in vaults)
    # Per vault: 2 reminders, grace to journalist + caseworker, released to both.
    assert note_count() == 3 * (2 + 2 + 2)
    keys = [n.key for n in notes()]
    assert len(keys) == len(set(keys))
    assert db.session.execute(select(Release)).scalars().all().__len__() == 3
    events = db.session.execute(select(VaultEvent.kind).where(VaultEvent.vault_id == vaults[0].id)).scalars().all()
    assert events.count("released") == 1 and events.count("grace") == 1
