"""Small populations, attacked: no hidden figure of a donor's report can be worked out.

For each population the donor downloads the JSON of every table and the CSV of
each; the attacker (tests/reports/attacker.py) writes down every relation
between the tables' counts and computes, by integer programming, the least and
greatest value of each hidden figure. Each must have at least two.
"""
from __future__ import annotations

import csv
import io
import random
from datetime import timedelta

import pytest

from protect.accounts.models import User
from protect.cases import codes
from protect.extensions import db
from tests.conftest import login
from tests.reports.attacker import Knowns, report_relations
from tests.reports.conftest import MAR, set_min_cell

START = MAR - timedelta(days=90)
ARGS = "start=2025-12&end=2026-02"


def random_population(population, caseworkers, seed: int, n: int) -> None:
    rng = random.Random(seed)
    def when():
        return START + timedelta(seconds=rng.randrange(int((MAR - START).total_seconds())))
    for _ in range(n):
        outcome = rng.choice(["ordinary", "ordinary", "extraordinary", "not_admitted", None])
        case = population.case(
            when(), state=rng.choice(["VER", "VER", "GRO", "OAX", "CHIS"]),
            beneficiary=rng.choice(list(codes.BENEFICIARY_TYPES)), gender=rng.choice(["woman", "man", None]),
            aggressor=rng.choice(["criminal_group", "official_municipal", "unknown"]), triage=outcome,
            reason=rng.choice(["duplicate", "not_beneficiary"]) if outcome == "not_admitted" else None,
            assignee=rng.choice(caseworkers + [None]))
        start = case.submitted_at
        population.clock(case, "triage", start, start + timedelta(hours=rng.uniform(0.5, 30))
                         if rng.random() < 0.8 else None)
        for stage in rng.sample(["risk_assessment", "implementation", "decision_communicated", "review"], 2):
            begun = start - timedelta(days=rng.uniform(0, 120))
            ended = begun + timedelta(days=rng.uniform(0.2, 60)) if rng.random() < 0.7 else None
            population.clock(case, stage, begun, ended)
        for _ in range(rng.randrange(3)):
            decided = when()
            population.measure(case, rng.choice(["panic_button", "escort", "cameras"]),
                               rng.choice(list(codes.AUTHORITIES)), decided,
                               implemented=decided + timedelta(days=rng.uniform(1, 50)) if rng.random() < 0.6 else None)
        if rng.random() < 0.4:
            reported = when()
            population.threat(case, rng.choice(["facebook", "x", "tiktok"]), reported,
                              responded=reported + timedelta(hours=rng.uniform(1, 200)) if rng.random() < 0.5 else None)
    db.session.commit()


@pytest.mark.parametrize("seed, n, k, scope, args", [
    (1, 12, 5, None, ""), (2, 30, 5, None, ""), (3, 45, 5, None, ""), (4, 25, 3, None, ""),
    # A donor limited to two states, looking at women only: the other rows are known to be zero.
    (5, 60, 3, {"states": ["VER", "GRO"], "beneficiaries": []}, "&gender=woman"),
])
def test_no_hidden_figure_can_be_worked_out(app, client, make_account, population, seed, n, k, scope, args):
    set_min_cell(app, k)
    caseworkers = [db.session.get(User, make_account("caseworker").id) for _ in range(3)]
    random_population(population, caseworkers, seed, n)
    donor = make_account("donor")
    db.session.get(User, donor.id).report_scope = scope
    db.session.commit()
    assert login(client, donor).status_code == 302
    response = client.get(f"/reports/report.json?{ARGS}{args}")
    assert response.status_code == 200
    tables = {t["key"]: t for t in response.get_json()["tables"]}

    # The CSV of each table holds the same figures and marks as the JSON, and nothing more.
    for key, table in tables.items():
        rows = list(csv.reader(io.StringIO(client.get(f"/reports/{key}.csv?{ARGS}{args}").get_data(as_text=True))))
        by_key = {r[0]: r for r in rows[1:]}
        for row in table["rows"]:
            for i, column in enumerate(table["columns"]):
                value = row["values"][column["key"]]
                assert by_key[row["key"]][2 + i] == ("" if value is None else str(value)), (key, row["key"])

    attacker = report_relations(tables, k)
    hidden = attacker.hidden()
    assert hidden, "a population this small must have small figures"
    assert all(tables[t]["rows"] for t in tables)
    recovered = {key: ends for key, ends in attacker.ranges().items() if ends[0] == ends[1]}
    assert not recovered, f"worked out from the published figures: {recovered}"
    if seed == 3:
        # Complementary suppression was needed and used: some figures of k or more are hidden too.
        assert any(attacker.cells[key] == "•" for key in hidden)


def test_the_attacker_recovers_a_cell_left_alone():
    """The attack works: without complementary suppression a lone small cell of a total is recovered."""
    tables = {"t": {"columns": [{"key": "n", "kind": "count"}], "rows": [
        {"key": "a", "values": {"n": 12}}, {"key": "b", "values": {"n": "< 5"}},
        {"key": "total", "values": {"n": 15}}]}}
    knowns = Knowns(tables, 5)
    knowns.equal([("t", "total", "n")], [("t", "a", "n"), ("t", "b", "n")])
    assert knowns.ranges() == {("t", "b", "n"): (3, 3)}
