"""The report's own copy of the data (protect/reports/facts.py): it follows the timeline case by
case, is the same as one made from scratch, and is read along its indexes (on SQLite and
PostgreSQL)."""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import Integer, String, event, select, text

from protect.accounts.models import User
from protect.cases.models import CaseEvent
from protect.deadlines.models import Clock
from protect.extensions import UTCDateTime, db
from protect.reports import facts, service
from protect.reports.models import ClockFact, FactsMark, MeasureFact, RequestFact, ThreatFact
from tests.reports.conftest import FEB, JAN, MAR, PERIOD, utc

H, D = 3600, 86400

MODELS = (ClockFact, RequestFact, MeasureFact, ThreatFact)


def rows() -> dict:
    """Every fact row, by kind, as plain tuples in key order."""
    out = {}
    for model in MODELS:
        columns = [c for c in model.__table__.columns]
        out[model.__tablename__] = sorted(tuple(row) for row in db.session.execute(select(*columns)))
    return out


def received(who: User) -> int:
    report = service.build(db.session, who, PERIOD, service.Filters())
    return report.tables["requests"].total.values[0].value


def test_the_facts_follow_the_timeline_case_by_case(hand_made, population, frozen):
    """A look brings the facts up to the new events: only the cases they belong to are read
    again, and the result is what a rebuild from scratch gives."""
    supervisor = hand_made["supervisor"]
    assert facts.refresh(db.session) == "all"
    assert facts.refresh(db.session) == "current"
    before = received(supervisor)
    # A new request, a measure decided and implemented on an old case, a platform's answer:
    # each written with its event, as the workflow does.
    new = population.case(FEB + timedelta(days=3), state="OAX", triage="ordinary")
    old = db.session.execute(select(CaseEvent.case_id).where(CaseEvent.kind == "submitted")
                             .order_by(CaseEvent.id)).scalars().first()
    population.measure(db.session.get(type(new), old), "cameras", "state", JAN + timedelta(days=20),
                       implemented=FEB + timedelta(days=2))
    db.session.add(CaseEvent(case_id=old, kind="measure_implemented", at=FEB + timedelta(days=2), data={}))
    population.clock(new, "triage", FEB + timedelta(days=3), FEB + timedelta(days=3, hours=2))
    db.session.commit()
    frozen.advance(minutes=16)  # (kept figures are shown again for 15 minutes)
    assert facts.refresh(db.session) == "cases"
    assert received(supervisor) == before + 1
    incremental = rows()
    db.session.execute(text("DELETE FROM report_facts_mark"))
    db.session.commit()
    assert facts.refresh(db.session) == "all"
    assert rows() == incremental


def test_clocks_replayed_without_an_event_make_everything_again(hand_made, population):
    assert facts.refresh(db.session) == "all"
    case = population.case(JAN + timedelta(days=2))
    db.session.commit()
    assert facts.refresh(db.session) == "cases"
    population.clock(case, "triage", JAN + timedelta(days=2), JAN + timedelta(days=2, hours=1))  # no event
    db.session.commit()
    assert facts.refresh(db.session) == "all"
    assert db.session.execute(select(ClockFact.clock_id).where(ClockFact.case_id == case.id)).scalars().all()


def test_a_refresh_another_one_claimed_first_leaves_the_facts_to_it(hand_made, population, app):
    """Two refreshes at once (two workers, or a look and the sweeper): the mark is claimed by
    its edition, and the one that finds it taken makes nothing."""
    assert facts.refresh(db.session) == "all"
    case = population.case(JAN + timedelta(days=4))
    db.session.commit()
    edition = db.session.get(FactsMark, facts.MARK).edition
    # Another refresh claims the mark between this one's read of it and its claim.
    claimed: list[int] = []

    def claim_first(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE REPORT_FACTS_MARK") and not claimed:
            claimed.append(1)
            cursor.execute("UPDATE report_facts_mark SET edition = edition + 1")
    event.listen(db.engine, "before_cursor_execute", claim_first)
    try:
        assert facts.refresh(db.session) == "current"
    finally:
        event.remove(db.engine, "before_cursor_execute", claim_first)
    # (Here the other claim is undone with this one's transaction: the mark and facts as they were.)
    assert db.session.get(FactsMark, facts.MARK).edition == edition
    assert db.session.get(RequestFact, case.id) is None
    assert facts.refresh(db.session) == "cases" and db.session.get(RequestFact, case.id) is not None


def test_the_facts_hold_no_name_and_no_text(hand_made):
    """Codes, times and numbers only: nothing typed by a person can reach them."""
    facts.refresh(db.session)
    for model in MODELS:
        for column in model.__table__.columns:
            kind = column.type
            assert isinstance(kind, Integer | UTCDateTime) or (isinstance(kind, String) and kind.length <= 40), column
    for (case,) in db.session.execute(select(RequestFact.case_id)):
        assert re.fullmatch(r"[0-9a-f]{32}", case)


def test_percentiles_walk_an_index_and_counts_read_one(hand_made, database_url):
    """On SQLite (whose plans can be read back): no order statistic sorts its group, and the
    counts of the large families read a covering index, with no sort for their grouping; with
    the planner's statistics (``ANALYZE``, as after a bulk load) and without."""
    if not database_url.startswith("sqlite"):
        return
    facts.refresh(db.session)
    assert_plans_walk_indexes()
    db.session.execute(text("ANALYZE"))
    db.session.commit()
    assert_plans_walk_indexes()
    # The statistics of the 100,000 benchmark cases (bench/reports.py), where SQLite once chose
    # to read a period's range and sort a month's rows: written in, then loaded.
    db.session.execute(text("DELETE FROM sqlite_stat1 WHERE tbl LIKE 'report!_%' ESCAPE '!'"))
    for line in STATISTICS_AT_100K.split():
        table, index, stat = line.split("|")
        db.session.execute(text("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (:table, :index, :stat)"),
                           {"stat": stat.replace(",", " "), "table": table, "index": index})
    db.session.execute(text("ANALYZE sqlite_schema"))
    db.session.commit()
    assert_plans_walk_indexes()
    assert db.session.execute(select(Clock.id)).first()  # (the population has clocks to rank)


STATISTICS_AT_100K = """
    report_clocks|ix_report_clocks_beneficiary_spent|466155,58270,19424,2,2,2,2
    report_clocks|ix_report_clocks_case|466155,5
    report_clocks|ix_report_clocks_done|466155,58270,1565,316,213,12,7,4
    report_clocks|ix_report_clocks_gender_spent|466155,58270,11654,2,2,2,2
    report_clocks|ix_report_clocks_journey|466155,58270,2,2,2,2,2
    report_clocks|ix_report_clocks_month_spent|466155,58270,1565,2,2,2,2
    report_clocks|ix_report_clocks_months|466155,58270,1597,221,14,8,5
    report_clocks|ix_report_clocks_open|466155,1,1,1,1,1,1,1,1,1,1
    report_clocks|ix_report_clocks_spent|466155,58270,2,2,2,2,2
    report_clocks|ix_report_clocks_started|466155,58270,1597,1,1,1,1,1
    report_clocks|ix_report_clocks_state_spent|466155,58270,1821,2,2,2,2
    report_clocks|ix_report_clocks_who|466155,58270,1565,52,21,10,4
    report_clocks|sqlite_autoindex_report_clocks_1|466155,1
    report_measures|ix_report_measures_authority_spent|210556,52639,1,1,1,1,1,1,1
    report_measures|ix_report_measures_case|210556,3,3,1,1,1,1,1
    report_measures|ix_report_measures_kind_spent|210556,14038,1,1,1,1,1,1,1
    report_measures|ix_report_measures_month_spent|210556,5691,1,1,1,1,1,1
    report_measures|ix_report_measures_month|210556,5691,1433,243,1,1,1,1,1,1,1,1
    report_measures|ix_report_measures_spent|210556,2,1,1,1,1,1,1
    report_measures|sqlite_autoindex_report_measures_1|210556,1
    report_requests|ix_report_requests_aggressor|99366,2686,448,15,7,4
    report_requests|ix_report_requests_assignee|99366,2686,135,5,3,2
    report_requests|ix_report_requests_beneficiary|99366,2686,896,30,13
    report_requests|ix_report_requests_gender|99366,2686,541,20,13
    report_requests|ix_report_requests_month|99366,2686,686,305,1,1,1,1
    report_requests|ix_report_requests_state|99366,2686,85,30,13
    report_requests|sqlite_autoindex_report_requests_1|99366,1
    report_threats|ix_report_threats_answer_time|37703,2,2,2,2,2,2
    report_threats|ix_report_threats_case|37703,2,2,1,1,1,1,1
    report_threats|ix_report_threats_month_answer_time|37703,1048,2,2,2,2,2
    report_threats|ix_report_threats_month_removal_time|37703,1048,4,4,4,3,3
    report_threats|ix_report_threats_month|37703,1048,131,2,2,2,2,2,1
    report_threats|ix_report_threats_platform_answer_time|37703,4713,2,2,2,2,2,2
    report_threats|ix_report_threats_platform_removal_time|37703,4713,4,4,4,3,2,2
    report_threats|ix_report_threats_removal_time|37703,4,4,4,4,3,3
    report_threats|sqlite_autoindex_report_threats_1|37703,1
"""


def assert_plans_walk_indexes() -> None:
    seen: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, *args):
        seen.append((statement, parameters))
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        service.read_figures(db.session, service.Ask(PERIOD, service.Filters(states=("VER", "OAX")), MAR))
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    db.session.commit()
    raw = db.session.connection().connection.dbapi_connection
    ranks = [(s, p) for s, p in seen if "LIMIT 1 OFFSET" in s]
    counts = [(s, p) for s, p in seen if re.match(r"\s*SELECT (stage, stop_month|month, authority|month, outcome)", s)]
    assert ranks and len(counts) == 4
    for statement, parameters in ranks + counts:
        plan = " / ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, parameters))
        assert "TEMP B-TREE" not in plan and "COVERING INDEX" in plan, plan


def test_a_pinged_connection_leaves_the_pool_idle(hand_made, monkeypatch):
    """The pool tries a connection idle for a while before handing it out; the try must not leave
    a transaction open, or the full refresh's VACUUM (PostgreSQL, autocommit) cannot run on it."""
    import protect
    monkeypatch.setattr(protect, "IDLE_BEFORE_PING", 0.0)   # every checkout tries its connection
    assert facts.refresh(db.session) == "all"
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1


def test_a_case_counts_once_among_the_clocks_open_and_the_platform_answers(population, make_account):
    """Distinct cases in groups that depend on the end of the period, where a case has several
    rows in one: the clocks open then, and the platform reports answered by then or not."""
    cw1, cw2 = (db.session.get(User, make_account("caseworker").id) for _ in range(2))
    p = population
    a, b, c = (p.case(utc(2025, 12, day), assignee=cw) for day, cw in ((1, cw1), (2, cw1), (3, cw2)))
    # Open at the end (MAR): a's two triages and its risk assessment, b's two triages (one stops
    # only after the end), c's review. a's appeal stopped before.
    for case, stage, started, stopped in (
            (a, "triage", utc(2026, 1, 5), None), (a, "triage", utc(2026, 2, 10), None),
            (a, "risk_assessment", utc(2026, 1, 20), None), (a, "appeal", utc(2025, 12, 5), utc(2026, 1, 2)),
            (b, "triage", utc(2026, 2, 20), None), (b, "triage", utc(2025, 12, 20), MAR + timedelta(days=9)),
            (c, "review", utc(2026, 2, 25), None)):
        p.clock(case, stage, started, stopped)
    # Reported in the period: a three times to Facebook (two answered by the end) and once to X
    # (answered), and once before the period; b once to Facebook, answered only after the end.
    for case, platform, reported, responded in (
            (a, "facebook", utc(2026, 1, 3), utc(2026, 1, 4)), (a, "facebook", utc(2026, 2, 3), None),
            (a, "facebook", utc(2026, 2, 15), utc(2026, 2, 16)), (a, "x", utc(2026, 1, 8), utc(2026, 1, 9)),
            (a, "facebook", utc(2025, 12, 10), utc(2025, 12, 11)),
            (b, "facebook", utc(2026, 1, 10), MAR + timedelta(days=4))):
        p.threat(case, platform, reported, responded=responded)
    db.session.commit()
    figures = service._thaw(service.read_figures(db.session, service.Ask(PERIOD, service.Filters(), MAR)))

    def rows_and_cases(family: str, level: str) -> dict:
        return {key: (agg.n, agg.cases) for key, agg in figures[family][level].items()}
    assert rows_and_cases("waiting", "all") == {(): (6, 3)}
    assert rows_and_cases("waiting", "stage") == {("triage",): (4, 2), ("risk_assessment",): (1, 1),
                                                  ("review",): (1, 1)}
    # Ages at the end: triages 9, 19, 55 and 71 days (and the 6 hours to Mexico City's midnight).
    assert rows_and_cases("waiting", "band") == {("week",): (1, 1), ("weeks",): (2, 2), ("months",): (3, 2)}
    assert rows_and_cases("waiting", "assignee") == {(cw1.id,): (5, 2), (cw2.id,): (1, 1)}
    triage, risk = figures["waiting"]["stage_age"][("triage",)], figures["waiting"]["stage_age"][("risk_assessment",)]
    assert (triage.median, triage.worst, risk.median, risk.worst) == (19 * D + 6 * H, 71 * D + 6 * H,
                                                                      40 * D + 6 * H, 40 * D + 6 * H)
    assert rows_and_cases("threats", "answered") == {("1",): (3, 1), ("0",): (2, 2)}
    assert rows_and_cases("threats", "cell") == {("facebook", "1"): (2, 1), ("facebook", "0"): (2, 2),
                                                 ("x", "1"): (1, 1)}
    assert rows_and_cases("threats", "all") == {(): (5, 2)}


def test_each_half_of_the_figures_reads_one_snapshot(hand_made, population):
    """A refresh that commits while the figures are being read shows in none of a family's
    statements or in all of them: here a request added between two of its counts."""
    facts.refresh(db.session)
    late = population.case(FEB + timedelta(days=2), state="GRO", triage="ordinary")
    db.session.commit()
    facts.refresh(db.session)
    row = {c.name: v for c, v in zip(RequestFact.__table__.columns, db.session.execute(
        select(*RequestFact.__table__.columns).where(RequestFact.case_id == late.id)).one(), strict=True)}
    db.session.execute(RequestFact.__table__.delete().where(RequestFact.case_id == late.id))
    db.session.commit()
    added, engine = [], db.engine

    def meanwhile(conn, cursor, statement, *args):   # (on the connection of the half that reads requests)
        if not added and re.match(r"\s*SELECT month, assignee", statement):
            added.append(statement)
            with engine.begin() as other:
                other.execute(RequestFact.__table__.insert().values(row))
    event.listen(db.engine, "before_cursor_execute", meanwhile)
    try:
        figures = service._thaw(service.read_figures(db.session, service.Ask(PERIOD, service.Filters(), MAR)))
    finally:
        event.remove(db.engine, "before_cursor_execute", meanwhile)
    requests = figures["requests"]
    assert added
    assert requests["all"][()].n == sum(agg.n for agg in requests["assignee"].values()) == sum(
        agg.n for agg in requests["state"].values())
