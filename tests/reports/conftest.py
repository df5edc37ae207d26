"""Report fixtures: English messages, a frozen clock, and hand-made populations.

Populations are written as rows (cases, triage events, clocks, measures,
online threats), the way the workflow leaves them, so a test states exactly
which times each figure is made of.
"""
from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from protect.accounts.models import User
from protect.cases.models import Case, CaseEvent, Incident, Measure, OnlineThreat
from protect.deadlines.models import Clock, DeadlinePolicy
from protect.extensions import db
from protect.reports import service
from tests.vault.conftest import FrozenNow

# "Now" in these tests: mid-March 2026, so a donor's default period is March 2025 to February 2026.
NOW = datetime(2026, 3, 15, 18, 0, tzinfo=UTC)
JAN = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)    # 1 January 2026, 00:00 in Mexico City
FEB = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
MAR = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)    # the end of February, Mexico City
PERIOD_ARGS = "start=2026-01&end=2026-02"
TERMS = {"triage": timedelta(hours=3), "urgent_issued": timedelta(hours=3),
         "urgent_implemented": timedelta(hours=9), "risk_assessment": timedelta(days=10),
         "decision_communicated": timedelta(hours=72), "implementation": timedelta(days=30),
         "appeal": timedelta(days=15), "review": timedelta(days=183)}


@pytest.fixture(autouse=True)
def english_messages(request):
    """Messages in English for the tests with an app (the others need no database)."""
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, default_locale="en")


@pytest.fixture
def frozen(app) -> FrozenNow:
    clock = FrozenNow(NOW)
    app.extensions["protect.now"] = clock
    return clock


def set_min_cell(app, k: int) -> None:
    settings = app.extensions["protect.settings"]
    app.extensions["protect.settings"] = dataclasses.replace(settings, report_min_cell=k)


_references = itertools.count(1)


class Population:
    """Rows written straight into the tables, each with the times the test chooses."""

    def __init__(self, session):
        self.db = session
        self.policies = {p.stage: p.id for p in session.execute(
            select(DeadlinePolicy).where(DeadlinePolicy.version == 1)).scalars()}

    def case(self, submitted: datetime, *, state: str = "VER", beneficiary: str = "journalist",
             gender: str | None = "woman", aggressor: str = "criminal_group", triage: str | None = None,
             reason: str | None = None, triaged: datetime | None = None, assignee: User | None = None,
             status: str = "risk_assessment") -> Case:
        n = next(_references)
        case = Case(reference=f"PRT-{n:04d}-TEST", status=status, beneficiary_type=beneficiary, gender=gender,
                    state_code=state, submitted_at=submitted, created_at=submitted, updated_at=submitted,
                    assignee_id=assignee.id if assignee else None,
                    procedure=triage if triage in ("ordinary", "extraordinary") else None)
        self.db.add(case)
        self.db.flush()
        self.db.add(Incident(case_id=case.id, occurred_on=date(2025, 12, 1), kind="threat", aggressor=aggressor,
                             channel="phone"))
        self.db.add(CaseEvent(case_id=case.id, kind="submitted", at=submitted, data={}))
        if triage:
            data = {"procedure": triage, **({"reason": reason} if reason else {})}
            self.db.add(CaseEvent(case_id=case.id, kind="triaged", at=triaged or submitted + timedelta(hours=1),
                                  data=data))
        return case

    def clock(self, case: Case, stage: str, started: datetime, stopped: datetime | None = None, *,
              paused: timedelta = timedelta(0), cancelled: bool = False) -> Clock:
        """A clock due its stage's term after it started (plus the pause); met if stopped before that."""
        due = started + TERMS[stage] + paused
        state = ("cancelled" if cancelled else "running" if stopped is None
                 else "met" if stopped < due else "met_late")
        clock = Clock(case_id=case.id, policy_id=self.policies[stage], stage=stage, state=state,
                      started_at=started, warn_at=started, due_at=due, stopped_at=stopped,
                      paused_seconds=int(paused.total_seconds()))
        self.db.add(clock)
        return clock

    def measure(self, case: Case, kind: str, authority: str, decided: datetime, *,
                implemented: datetime | None = None, withdrawn: datetime | None = None) -> Measure:
        measure = Measure(case_id=case.id, kind=kind, authority=authority, decided_at=decided,
                          implemented_at=implemented, withdrawn_at=withdrawn,
                          status="implemented" if implemented else "withdrawn" if withdrawn else "decided")
        self.db.add(measure)
        return measure

    def threat(self, case: Case, platform: str, reported: datetime, *, responded: datetime | None = None,
               removed: datetime | None = None) -> OnlineThreat:
        threat = OnlineThreat(case_id=case.id, platform=platform, reported_at=reported, responded_at=responded,
                              removed_at=removed)
        self.db.add(threat)
        return threat


@pytest.fixture
def population(ctx, frozen) -> Population:
    return Population(db.session)


PERIOD = service.Period(date(2026, 1, 1), date(2026, 2, 1))


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def hand_made(population, make_account):
    cw1, cw2, sup = (db.session.get(User, make_account(r).id) for r in ("caseworker", "caseworker", "supervisor"))
    write_hand_made(population, cw1, cw2)
    return {"supervisor": sup, "cw1": cw1, "cw2": cw2}


def write_hand_made(p: Population, cw1: User, cw2: User) -> None:
    """Six cases (five received in the period), their clocks, measures and online threats
    (tests/reports/test_correctness.py works out every figure they make)."""
    c0 = p.case(utc(2025, 12, 10, 6), triage="ordinary", assignee=cw2)               # before the period
    c1 = p.case(JAN + timedelta(days=1), triage="ordinary", assignee=cw1)
    c2 = p.case(JAN + timedelta(days=2), gender="man", aggressor="official_state", triage="extraordinary",
                assignee=cw1)
    c3 = p.case(JAN + timedelta(days=3), state="OAX", beneficiary="defender", triage="not_admitted",
                reason="duplicate", assignee=cw2, status="not_admitted")
    c4 = p.case(FEB + timedelta(days=1), state="GRO", beneficiary="collective", gender=None, aggressor="unknown",
                triage="ordinary", assignee=cw1)
    c5 = p.case(FEB + timedelta(days=2), triage="ordinary", triaged=MAR + timedelta(days=1))  # decided after the end

    # Triage (3 hours): 1 h, 2 h on time; 4 h (6 h with 2 h paused) and 5 h late.
    p.clock(c1, "triage", c1.submitted_at, c1.submitted_at + timedelta(hours=1))
    p.clock(c2, "triage", c2.submitted_at, c2.submitted_at + timedelta(hours=2))
    p.clock(c3, "triage", c3.submitted_at, c3.submitted_at + timedelta(hours=6), paused=timedelta(hours=2))
    p.clock(c4, "triage", c4.submitted_at, c4.submitted_at + timedelta(hours=5))
    p.clock(c0, "triage", c0.submitted_at, c0.submitted_at + timedelta(hours=1))      # ended before the period
    p.clock(c5, "triage", c5.submitted_at)                                             # waiting: 26 days
    p.clock(c0, "triage", utc(2026, 2, 27, 6), MAR + timedelta(days=2))               # waiting at the end: 2 days
    p.clock(c4, "triage", FEB + timedelta(days=5), FEB + timedelta(days=6), cancelled=True)  # in no figure

    # Implementation (30 natural days): 10, 20 days on time; 31, 40, 50 days late.
    p.clock(c1, "implementation", utc(2025, 12, 25, 6), utc(2026, 1, 4, 6))
    p.clock(c2, "implementation", utc(2025, 12, 20, 6), utc(2026, 1, 9, 6))
    p.clock(c0, "implementation", utc(2025, 12, 15, 6), utc(2026, 1, 15, 6))
    p.clock(c4, "implementation", utc(2026, 1, 1, 6), utc(2026, 2, 10, 6))
    p.clock(c3, "implementation", utc(2025, 12, 31, 6), utc(2026, 2, 19, 6))
    p.clock(c2, "implementation", utc(2026, 2, 15, 6))                                 # waiting: 14 days

    # Risk assessment: two still waiting, since 1 October (151 days) and 1 June 2025 (273 days).
    p.clock(c0, "risk_assessment", utc(2025, 10, 1, 6))
    p.clock(c1, "risk_assessment", utc(2025, 6, 1, 6))

    p.measure(c1, "panic_button", "federal", JAN + timedelta(days=5), implemented=JAN + timedelta(days=15))
    p.measure(c1, "cameras", "state", JAN + timedelta(days=5), implemented=JAN + timedelta(days=25))
    p.measure(c2, "patrols", "municipal", JAN + timedelta(days=6))
    p.measure(c2, "escort", "private", JAN + timedelta(days=6), withdrawn=JAN + timedelta(days=9))
    p.measure(c4, "phone", "federal", FEB + timedelta(days=3), implemented=MAR + timedelta(days=2))  # after the end
    p.measure(c0, "panic_button", "federal", utc(2025, 12, 20), implemented=utc(2026, 1, 2))       # before

    p.threat(c1, "facebook", JAN + timedelta(days=2), responded=JAN + timedelta(days=2, hours=5),
             removed=JAN + timedelta(days=2, hours=10))
    p.threat(c2, "facebook", JAN + timedelta(days=3), responded=JAN + timedelta(days=3, hours=15))
    p.threat(c3, "x", FEB + timedelta(days=1))
    p.threat(c4, "x", FEB + timedelta(days=2), responded=MAR + timedelta(hours=1))       # answered after the end
    p.threat(c0, "facebook", utc(2025, 12, 30))                                          # before the period
    p.db.commit()
