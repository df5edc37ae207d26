"""Who may see and do what: only the owner reads a vault; co-depositors only add;
no staff role reads deposits before release; nothing personal in the audit log."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from protect.audit.models import AuditEntry
from protect.errors import DomainError, NotFound, PermissionDenied
from protect.extensions import db
from protect.notify.models import Notification
from protect.vault import service as vs
from protect.vault.models import VaultEvent

from .conftest import DURESS, PIN, make_vault, open_case, upload


def test_only_the_owner_gets_the_vault(people):
    vault = make_vault(people)
    j = people["journalist"]
    assert vs.get_vault(db.session, j, vault.id) is vault
    for role in ("other_journalist", "caseworker", "supervisor", "admin"):
        with pytest.raises(NotFound, match="No such vault"):
            vs.get_vault(db.session, people[role], vault.id)
        with pytest.raises(NotFound):
            vs.deposits(db.session, people[role], vault)
        with pytest.raises(NotFound):
            vs.get_vault_for_deposit(db.session, people[role], vault.id)
        with pytest.raises(NotFound):
            vs.timeline(db.session, people[role], vault)
        assert vs.list_vaults(db.session, people[role]) == []
    for bad in ("", "x" * 32, "../" * 11, None, vault.id.upper()):
        with pytest.raises(NotFound):
            vs.get_vault(db.session, j, bad)
    assert vs.list_vaults(db.session, j) == [vault]


def test_staff_cannot_act_as_the_owner(people):
    vault = make_vault(people)
    for role in ("other_journalist", "caseworker", "supervisor", "admin"):
        someone = people[role]
        with pytest.raises(NotFound):
            vs.add_recipient(db.session, someone, vault, name="X", email="x@example.org", access_code="codigo-largo")
        with pytest.raises(NotFound):
            vs.add_note(db.session, someone, vault, "nota")
        with pytest.raises(NotFound):
            vs.delete_vault(db.session, someone, vault)
        with pytest.raises(NotFound):
            vs.set_pins(db.session, someone, vault, pin="111111", duress_pin="222222", current_pin=PIN)


def test_codepositor_adds_but_cannot_read_list_names_or_delete(people):
    j, co = people["journalist"], people["other_journalist"]
    vault = make_vault(people)
    with pytest.raises(DomainError):
        vs.add_codepositor(db.session, j, vault, people["caseworker"])
    with pytest.raises(DomainError):
        vs.add_codepositor(db.session, j, vault, j)
    vs.add_codepositor(db.session, j, vault, co)
    db.session.commit()
    assert vs.get_vault_for_deposit(db.session, co, vault.id) is vault
    assert vs.codeposit_vaults(db.session, co) == [vault]
    with pytest.raises(NotFound):
        vs.get_vault(db.session, co, vault.id)
    mine = vs.add_file_deposit(db.session, co, vault, upload(vault, b"leaked memo", "memo.docx"))
    owners = vs.add_note(db.session, j, vault, "nota de la dueña")
    db.session.commit()
    listed = vs.deposits(db.session, co, vault)
    assert [(d.name, d.mine) for d in listed] == [(None, True), (None, False)]  # every name: "encrypted"
    assert [d.name for d in vs.deposits(db.session, j, vault)] == ["memo.docx", None]
    with pytest.raises(NotFound):
        vs.delete_deposit(db.session, co, vault, owners)
    with pytest.raises(NotFound):
        vs.delete_deposit(db.session, co, vault, mine)
    with pytest.raises(NotFound):
        vs.timeline(db.session, co, vault)
    vs.remove_codepositor(db.session, j, vault, co.id)
    db.session.commit()
    with pytest.raises(NotFound):
        vs.get_vault_for_deposit(db.session, co, vault.id)


def test_staff_overview_shows_states_only(people):
    open_case(people)
    vault = make_vault(people)
    j = people["journalist"]
    assert vs.staff_vaults(db.session, people["supervisor"], j) == [(vault.id, "armed", vault.next_due_at)]
    assert vs.staff_vaults(db.session, people["caseworker"], j)[0][0] == vault.id
    with pytest.raises(PermissionDenied):
        vs.staff_vaults(db.session, people["caseworker2"], j)
    with pytest.raises(PermissionDenied):
        vs.staff_vaults(db.session, people["admin"], j)


def test_audit_and_notices_hold_no_personal_data(people, clock):
    open_case(people)
    j = people["journalist"]
    title = "Investigación: el gobernador y los contratos"
    vault = make_vault(people, title=title)
    vs.add_recipient(db.session, j, vault, name="María Periodista", email="maria@example.org",
                     access_code="codigo-en-persona")
    vs.add_file_deposit(db.session, j, vault, upload(vault, b"data", "nombres-de-fuentes.pdf"))
    vs.check_in(db.session, vault, DURESS)
    vs.request_release(db.session, people["caseworker"], vault, "Sus colegas denunciaron su desaparición")
    incident = vs.report_incident(db.session, people["supervisor"], j, "disappearance", "Testigos en Xalapa")
    vs.confirm_incident(db.session, people["supervisor2"], incident, "Confirmado por la fiscalía")
    db.session.commit()
    vs.sweep(db.session)
    secrets = ["gobernador", "María", "maria@example.org", "nombres-de-fuentes", "desaparición", "Xalapa",
               "fiscalía", PIN, DURESS, "codigo-en-persona", "AGE-SECRET-KEY"]
    texts = [e.details + (e.target or "") for e in db.session.execute(select(AuditEntry)).scalars()]
    texts += [str(n.data) + n.key for n in db.session.execute(select(Notification)).scalars()]
    texts += [str(e.data) + e.kind for e in db.session.execute(select(VaultEvent)).scalars()]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    # The sealed columns really are sealed.
    assert title.encode() not in vault.title_ct and vault.title == title
