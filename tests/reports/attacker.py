"""An attacker who knows how the report's tables add up and tries to work out every hidden figure.

Independent of the suppression code: the relations below are written from the
tables' meaning (a row adds up to its total, the months to the period, the
states to all requests, ...), and each hidden figure's least and greatest
possible values are found by integer programming (scipy's HiGHS), given every
published figure and what the marks say ("< k": 0 to k-1; "•": k or more).
A figure is recovered when both are equal.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

BIG = 10**6


class Knowns:
    """The report's counts, by (table, row, column): a number or a mark."""

    def __init__(self, tables: dict, k: int):
        self.k = k
        self.cells = {}
        for key, table in tables.items():
            for row in table["rows"]:
                for column in table["columns"]:
                    if column["kind"] == "count" and row["values"][column["key"]] is not None:
                        self.cells[(key, row["key"], column["key"])] = row["values"][column["key"]]
        self.relations: list[tuple[list, list]] = []  # (cells summed, cells summed): equal

    def equal(self, left: list, right: list) -> None:
        self.relations.append((left, right))

    def rows_of(self, table: str, *, total: bool = False) -> list[str]:
        rows = sorted({r for (t, r, _) in self.cells if t == table})
        return rows if total else [r for r in rows if r != "total"]

    # -- the attack ------------------------------------------------------------------
    def hidden(self) -> list:
        return [key for key, v in self.cells.items() if isinstance(v, str)]

    def ranges(self) -> dict:
        """The least and greatest value each hidden figure can take, over whole numbers."""
        equations = []  # (hidden cells with their coefficients, constant)
        for left, right in self.relations:
            terms, constant = {}, 0
            for sign, side in ((1, left), (-1, right)):
                for key in side:
                    value = self.cells[key]
                    if isinstance(value, str):
                        terms[key] = terms.get(key, 0) + sign
                    else:
                        constant -= sign * value
            terms = {key: a for key, a in terms.items() if a}
            if terms:
                equations.append((terms, constant))
            else:
                assert constant == 0, f"published figures do not add up: {left} = {right}"
        # Figures tied by no equation are known only by their mark; the rest, one connected group at a time.
        group = {key: key for key in self.hidden()}

        def root(key):
            while group[key] != key:
                group[key] = group[group[key]]
                key = group[key]
            return key
        for terms, _ in equations:
            first, *rest = terms
            for key in rest:
                group[root(key)] = root(first)
        found = {}
        for members in _groups(group, root).values():
            found.update(self._solve(members, [e for e in equations if root(next(iter(e[0]))) == root(members[0])]))
        return found

    def _solve(self, unknown: list, equations: list) -> dict:
        index = {key: i for i, key in enumerate(unknown)}
        low = [0 if self.cells[key] == f"< {self.k}" else self.k for key in unknown]
        high = [self.k - 1 if self.cells[key] == f"< {self.k}" else BIG for key in unknown]
        constraints = []
        if equations:
            matrix = np.zeros((len(equations), len(unknown)))
            for row, (terms, _) in enumerate(equations):
                for key, a in terms.items():
                    matrix[row, index[key]] = a
            rhs = [constant for _, constant in equations]
            constraints = [LinearConstraint(matrix, rhs, rhs)]
        found = {}
        for key in unknown:
            if not equations:
                found[key] = (low[index[key]], high[index[key]])
                continue
            objective = np.zeros(len(unknown))
            objective[index[key]] = 1
            ends = []
            for sign in (1, -1):
                result = milp(sign * objective, constraints=constraints, integrality=np.ones(len(unknown)),
                              bounds=Bounds(low, high))
                assert result.success, result.message
                ends.append(round(sign * result.fun))
            found[key] = tuple(ends)
        return found


def _groups(group: dict, root) -> dict:
    out: dict = {}
    for key in group:
        out.setdefault(root(key), []).append(key)
    return out


def report_relations(tables: dict, k: int) -> Knowns:
    """Every additive relation a careful reader finds between the tables of one report."""
    kn = Knowns(tables, k)
    def c(table, row, column):
        return (table, row, column)
    months = kn.rows_of("requests")
    outcomes = ("extraordinary", "ordinary", "not_admitted", "pending")
    for row in months + ["total"]:
        kn.equal([c("requests", row, "received")], [c("requests", row, o) for o in outcomes])
    for column in ("received",) + outcomes:
        kn.equal([c("requests", "total", column)], [c("requests", m, column) for m in months])
    kn.equal([c("reasons", "total", "count")], [c("reasons", r, "count") for r in kn.rows_of("reasons")])
    kn.equal([c("reasons", "total", "count")], [c("requests", "total", "not_admitted")])
    for table in ("by_state", "by_beneficiary", "by_gender", "by_aggressor"):
        kn.equal([c(table, "total", "received")], [c(table, r, "received") for r in kn.rows_of(table)])
        kn.equal([c(table, "total", "received")], [c("requests", "total", "received")])
    kn.equal([c("requests", "total", "received")], [c("caseload", r, "received") for r in kn.rows_of("caseload")])
    for m in kn.rows_of("trend"):
        kn.equal([c("trend", m, "received")], [c("requests", m, "received")])
    stages = kn.rows_of("stages")
    for s in stages:
        kn.equal([c("stages", s, "completed")], [c("stages", s, "on_time"), c("stages", s, "late")])
        kn.equal([c("lateness", s, "completed")], [c("stages", s, "completed")])
        kn.equal([c("lateness", s, "on_time")], [c("stages", s, "on_time")])
        kn.equal([c("stages", s, "late")], [c("lateness", s, b) for b in ("x2", "x4", "x8", "more")])
        kn.equal([c("stages", s, "waiting")], [c("backlog", s, "total")])
        its_months = [r for r in kn.rows_of("stage_months") if r.startswith(s + ":")]
        for column in ("completed", "on_time"):
            kn.equal([c("stages", s, column)], [c("stage_months", r, column) for r in its_months])
    kn.equal([c("journey", "journey", "completed")], [c("stages", "implementation", "completed")])
    bands = ("week", "weeks", "months", "half_year", "older")
    for row in stages + ["total"]:
        kn.equal([c("backlog", row, "total")], [c("backlog", row, b) for b in bands])
    for column in bands + ("total",):
        kn.equal([c("backlog", "total", column)], [c("backlog", s, column) for s in stages])
    kn.equal([c("trend", max(kn.rows_of("trend"), key=int), "open")], [c("backlog", "total", "total")])
    statuses = ("implemented", "pending", "withdrawn")
    for table in ("measures_authority", "measures_type"):
        for row in kn.rows_of(table, total=True):
            kn.equal([c(table, row, "decided")], [c(table, row, s) for s in statuses])
        for column in ("decided",) + statuses:
            kn.equal([c(table, "total", column)], [c(table, r, column) for r in kn.rows_of(table)])
    kn.equal([c("measures_authority", "total", "decided")],
             [c("trend", m, "measures_decided") for m in kn.rows_of("trend")])
    for row in kn.rows_of("platforms", total=True):
        kn.equal([c("platforms", row, "reported")], [c("platforms", row, "answered"), c("platforms", row, "unanswered")])
    for column in ("reported", "answered", "unanswered"):
        kn.equal([c("platforms", "total", column)], [c("platforms", r, column) for r in kn.rows_of("platforms")])
    kn.equal([c("platforms", "total", "reported")], [c("trend", m, "reported") for m in kn.rows_of("trend")])
    return kn
