"""Every figure of the report over a hand-made population, computed by hand (on SQLite and PostgreSQL).

The period is January and February 2026 (Mexico City months); "now" is 15 March,
so every figure is as of 1 March 2026, 00:00 in Mexico City (06:00 UTC).
Nearest-rank percentiles: of n values in order, the p-th is the one of rank
ceil(p·n/100).
"""
from __future__ import annotations

from datetime import timedelta

from protect.accounts.models import User
from protect.extensions import db
from protect.reports import formats, service
from tests.reports.conftest import JAN, MAR, PERIOD

H, D = 3600, 86400


def build(who: User, period=PERIOD, filters=None) -> service.Report:
    return service.build(db.session, who, period, filters or service.Filters())


def value(report, table: str, row: str, column: str):
    t = report.tables[table]
    found = {r.key: r for r in t.all_rows()}[row]
    v = found.values[[c.key for c in t.columns].index(column)]
    return v.value if hasattr(v, "status") else v


def test_stage_times_shares_and_waiting(hand_made):
    report = build(hand_made["supervisor"])
    def stage(row, col):
        return value(report, "stages", row, col)
    assert report.as_of == MAR
    # Triage: [1, 2, 4, 5] h — median rank 2, p90 rank 4.
    assert (stage("triage", "completed"), stage("triage", "on_time"), stage("triage", "late")) == (4, 2, 2)
    assert stage("triage", "on_time_share") == 0.5
    assert (stage("triage", "median"), stage("triage", "p90"), stage("triage", "worst")) == (2 * H, 5 * H, 5 * H)
    assert stage("triage", "term") == "3 hours"
    # Waiting at the end: 26 days and 2 days — median rank 1.
    assert (stage("triage", "waiting"), stage("triage", "median_wait"), stage("triage", "longest_wait")) == (
        2, 2 * D, 26 * D)
    # Implementation: [10, 20, 31, 40, 50] days — median rank 3, p90 rank 5; 2 of 5 on time.
    assert (stage("implementation", "completed"), stage("implementation", "on_time")) == (5, 2)
    assert stage("implementation", "on_time_share") == 0.4
    assert (stage("implementation", "median"), stage("implementation", "p90"),
            stage("implementation", "worst")) == (31 * D, 50 * D, 50 * D)
    assert stage("implementation", "term") == "30 natural days"
    assert (stage("implementation", "waiting"), stage("implementation", "median_wait")) == (1, 14 * D)
    # Risk assessment: nothing ended, two waiting (151 and 273 days).
    assert (stage("risk_assessment", "completed"), stage("risk_assessment", "median")) == (0, None)
    assert (stage("risk_assessment", "waiting"), stage("risk_assessment", "median_wait"),
            stage("risk_assessment", "longest_wait")) == (2, 151 * D, 273 * D)
    assert stage("appeal", "completed") == 0 and stage("appeal", "on_time_share") is None
    # Request to measures implemented: [2, 6, 8, 36, 46] days.
    assert [value(report, "journey", "journey", c) for c in ("completed", "median", "p90", "worst")] == [
        5, 8 * D, 46 * D, 46 * D]


def test_lateness_and_backlog(hand_made):
    report = build(hand_made["supervisor"])
    def lateness(stage):
        return [value(report, "lateness", stage, c) for c in
                                  ("on_time", "x2", "x4", "x8", "more", "completed")]
    assert lateness("triage") == [2, 2, 0, 0, 0, 4]            # 4/3 and 5/3 of the term
    assert lateness("implementation") == [2, 3, 0, 0, 0, 5]    # 31, 40, 50 days of 30
    def backlog(row):
        return [value(report, "backlog", row, c) for c in
                               ("week", "weeks", "months", "half_year", "older", "total")]
    assert backlog("triage") == [1, 1, 0, 0, 0, 2]
    assert backlog("implementation") == [0, 1, 0, 0, 0, 1]
    assert backlog("risk_assessment") == [0, 0, 0, 1, 1, 2]
    assert backlog("total") == [1, 2, 0, 1, 1, 5]


def test_stage_months_and_trend(hand_made):
    report = build(hand_made["supervisor"])
    def months(stage, month):
        return [value(report, "stage_months", f"{stage}:{month}", c)
                                       for c in ("completed", "on_time", "on_time_share", "median")]
    assert months("triage", "2026-01") == [3, 2, 2 / 3, 2 * H]
    assert months("triage", "2026-02") == [1, 0, 0.0, 5 * H]
    assert months("implementation", "2026-01") == [3, 2, 2 / 3, 20 * D]
    assert months("implementation", "2026-02") == [2, 0, 0.0, 40 * D]
    def trend(month):
        return [value(report, "trend", month, c) for c in (
            "received", "acceptance", "triage_median", "implementation_median", "implementation_on_time",
            "measures_decided", "measures_median", "reported", "answer_median", "open")]
    # At the end of January: implementation clocks 4 and 5 and both risk assessments were open.
    assert trend("0") == [3, 2 / 3, 2 * H, 20 * D, 2 / 3, 4, 10 * D, 2, 5 * H, 4]
    assert trend("1") == [2, 1.0, 5 * H, 40 * D, 0.0, 1, None, 2, None, 5]


def test_requests_admissions_and_reasons(hand_made):
    report = build(hand_made["supervisor"])
    def row(key):
        return [value(report, "requests", key, c) for c in
                           ("received", "extraordinary", "ordinary", "not_admitted", "pending", "acceptance")]
    assert row("0") == [3, 1, 1, 1, 0, 2 / 3]
    assert row("1") == [2, 0, 1, 0, 1, 1.0]     # the fifth was decided only after the end
    assert row("total") == [5, 1, 2, 1, 1, 0.75]
    assert value(report, "reasons", "duplicate", "count") == 1
    assert value(report, "reasons", "not_beneficiary", "count") == 0
    assert value(report, "reasons", "total", "count") == 1


def test_breakdowns(hand_made):
    report = build(hand_made["supervisor"])
    def received(table):
        return {r.key: r.values[0].value for r in report.tables[table].rows if r.values[0].value}
    assert received("by_state") == {"VER": 3, "OAX": 1, "GRO": 1}
    assert received("by_beneficiary") == {"journalist": 3, "defender": 1, "collective": 1}
    assert received("by_gender") == {"woman": 3, "man": 1, "unstated": 1}
    assert received("by_aggressor") == {"criminal_group": 3, "official_state": 1, "unknown": 1}
    assert value(report, "by_state", "total", "received") == 5
    # Triage: VER [1, 2] h, OAX 4 h; implementation: VER [10, 20, 31] d (2 of 3 on time), GRO 40 d.
    assert [value(report, "by_state", "VER", c) for c in
            ("triage_median", "implementation_median", "implementation_on_time")] == [1 * H, 20 * D, 2 / 3]
    assert [value(report, "by_state", "OAX", c) for c in ("triage_median", "implementation_median")] == [
        4 * H, 50 * D]
    assert value(report, "by_state", "GRO", "implementation_on_time") == 0.0
    assert value(report, "by_state", "CHIS", "triage_median") is None
    # Implementation by gender: women [10, 31, 50] days.
    assert value(report, "by_gender", "woman", "implementation_median") == 31 * D
    assert value(report, "by_gender", "unstated", "implementation_median") == 40 * D


def test_measures(hand_made):
    report = build(hand_made["supervisor"])
    columns = ("decided", "implemented", "pending", "withdrawn", "median", "p90", "worst")
    def row(table, key):
        return [value(report, table, key, c) for c in columns]
    assert row("measures_authority", "federal") == [2, 1, 1, 0, 10 * D, 10 * D, 10 * D]
    assert row("measures_authority", "state") == [1, 1, 0, 0, 20 * D, 20 * D, 20 * D]
    assert row("measures_authority", "municipal") == [1, 0, 1, 0, None, None, None]
    assert row("measures_authority", "private") == [1, 0, 0, 1, None, None, None]
    assert row("measures_authority", "total") == [5, 2, 2, 1, 10 * D, 20 * D, 20 * D]
    assert row("measures_type", "phone")[:4] == [1, 0, 1, 0]
    assert row("measures_type", "cameras")[:5] == [1, 1, 0, 0, 20 * D]
    assert row("measures_type", "total") == row("measures_authority", "total")


def test_platforms(hand_made):
    report = build(hand_made["supervisor"])
    columns = ("reported", "answered", "unanswered", "answer_median", "answer_p90", "removal_median")
    def row(key):
        return [value(report, "platforms", key, c) for c in columns]
    assert row("facebook") == [2, 2, 0, 5 * H, 15 * H, 10 * H]
    assert row("x") == [2, 0, 2, None, None, None]
    assert row("total") == [4, 2, 2, 5 * H, 15 * H, 10 * H]


def test_caseload(hand_made):
    report = build(hand_made["supervisor"])
    rows = report.tables["caseload"].rows
    # Caseworker 1 has the requests c1, c2, c4 and two open cases (c1, c2); caseworker 2 one of each.
    assert [[v.value for v in r.values if v is not None] for r in rows] == [[3, 2], [1, 1], [1]]
    assert rows[-1].key == service.NOBODY


def test_headlines_and_formats(hand_made):
    report = build(hand_made["supervisor"])
    lines = formats.headlines(report)
    assert lines[0] == "Measures implemented: median 31 days (legal term: 30 natural days). 40% on time."
    assert lines[1] == "From the request to the measures implemented: median 8 days."
    assert "Triage: median 2 h (legal term: 3 hours). 50% on time." in lines
    assert lines[-1] == "5 requests received. 75% of those decided were admitted."


def test_filters_narrow_every_figure(hand_made):
    report = build(hand_made["supervisor"], filters=service.Filters(states=("VER",)))
    assert value(report, "requests", "total", "received") == 3                  # c1, c2, c5
    assert value(report, "stages", "implementation", "completed") == 3          # c0, c1, c2
    assert value(report, "stages", "implementation", "median") == 20 * D
    assert value(report, "measures_authority", "total", "decided") == 4
    assert value(report, "platforms", "total", "reported") == 2
    assert [r.key for r in report.tables["by_state"].rows] == ["VER"]      # the rows the filter allows
    women = build(hand_made["supervisor"], filters=service.Filters(gender="woman"))
    assert value(women, "requests", "total", "received") == 3                   # c1, c3, c5


def test_percentiles_are_nearest_rank_for_every_n(population, make_account):
    """Medians and 90th percentiles of 1 to 12 values: ranks ceil(n/2) and ceil(9n/10)."""
    sup = db.session.get(User, make_account("supervisor").id)
    case = population.case(JAN)
    # Each stage gets n clocks of 1..n hours; stage order gives n = 1 .. 8 (appeal: 7, review: 8).
    for n, stage in enumerate(("triage", "urgent_issued", "urgent_implemented", "risk_assessment",
                               "decision_communicated", "implementation", "appeal", "review"), start=1):
        for hours in range(n, 0, -1):
            population.clock(case, stage, JAN + timedelta(days=n), JAN + timedelta(days=n, hours=hours))
    db.session.commit()
    report = build(sup)
    for n, row in enumerate(report.tables["stages"].rows, start=1):
        assert row.values[5] == -(-n // 2) * H, (row.key, n)
        assert row.values[6] == -(-9 * n // 10) * H, (row.key, n)
        assert row.values[7] == n * H
