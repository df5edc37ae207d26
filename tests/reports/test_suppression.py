"""The suppression rule on its own: small cells, complementary cells, and the audit's exactness.

Tables are built here with their sums written out by the test; an integer
program (tests/reports/attacker.py) then plays the reader who knows them.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protect.reports.suppression import HIDDEN, SHOWN, SMALL, Cell, Network, determined, suppress
from tests.reports.attacker import Knowns

K = 5


def mark(cell: Cell):
    return cell.value if cell.status == SHOWN else f"< {K}" if cell.status == SMALL else "•"


def knowns(named: dict[str, Cell], sums: list[tuple[list[str], list[str]]]) -> Knowns:
    """What a reader knows: the published marks and the sums the tables state."""
    tables = {"t": {"columns": [{"key": "n", "kind": "count"}],
                    "rows": [{"key": name, "values": {"n": mark(cell)}} for name, cell in named.items()]}}
    reader = Knowns(tables, K)
    for left, right in sums:
        reader.equal([("t", n, "n") for n in left], [("t", n, "n") for n in right])
    return reader


def two_way(values: list[list[int]], network: Network, prefix: str = "") -> tuple[dict, list]:
    """A table with its margins in ``network``; its cells by name and its sums."""
    cells = {f"{prefix}{r}.{c}": Cell(v) for r, row in enumerate(values) for c, v in enumerate(row)}
    rows = {f"{prefix}{r}.T": Cell(sum(row)) for r, row in enumerate(values)}
    columns = {f"{prefix}T.{c}": Cell(sum(row[c] for row in values)) for c in range(len(values[0]))}
    total = Cell(sum(map(sum, values)))
    network.table([[cells[f"{prefix}{r}.{c}"] for c in range(len(values[0]))] for r in range(len(values))],
                  list(rows.values()), list(columns.values()), total)
    sums = [([f"{prefix}{r}.T"], [f"{prefix}{r}.{c}" for c in range(len(values[0]))]) for r in range(len(values))]
    sums += [([f"{prefix}T.{c}"], [f"{prefix}{r}.{c}" for r in range(len(values))]) for c in range(len(values[0]))]
    sums.append(([f"{prefix}T"], list(rows)))
    return {**cells, **rows, **columns, f"{prefix}T": total}, sums


def test_small_cells_zero_included_show_as_below_k():
    cells = [Cell(0), Cell(4), Cell(5), Cell(9, cases=3)]
    suppress(Network(), cells, K)
    assert [c.status for c in cells] == [SMALL, SMALL, SHOWN, HIDDEN]  # 9 items of 3 cases: hidden, not "< 5"


def test_nothing_is_suppressed_with_k_of_one():
    cells = [Cell(0), Cell(1)]
    suppress(Network(), cells, 1)
    assert all(c.shown for c in cells)


def test_a_lone_small_cell_gets_a_complement_the_smallest_one():
    parts = [Cell(30), Cell(3), Cell(12), Cell(7)]
    total = Cell(52)
    network = Network()
    network.split(total, parts)
    suppress(network, parts + [total], K)
    assert [c.status for c in parts] == [SHOWN, SMALL, SHOWN, HIDDEN]
    assert total.shown
    reader = knowns({"a": parts[0], "b": parts[1], "c": parts[2], "d": parts[3], "T": total},
                    [(["T"], ["a", "b", "c", "d"])])
    assert all(low < high for low, high in reader.ranges().values())


def test_complements_are_the_cheapest_cycle_and_totals_stay():
    """One small cell in a table of larger ones: three more cells hide it (a rectangle), no total."""
    network = Network()
    named, sums = two_way([[10, 12, 3], [9, 14, 11]], network)
    suppress(network, list(named.values()), K)
    assert {n for n, c in named.items() if not c.shown} == {"0.2", "1.2", "1.0", "0.0"}
    assert named["0.2"].status == SMALL and named["1.0"].status == HIDDEN
    assert all(low < high for low, high in knowns(named, sums).ranges().values())


def test_bounds_are_part_of_the_audit():
    """Two small cells of one row, 1 and 1, with the row's total 2: "< 5" each, but both must be
    0..2 and add to 2, so neither is pinned; a third would be if the column gave it away."""
    network = Network()
    named, sums = two_way([[1, 1, 20], [9, 8, 30]], network)
    suppress(network, list(named.values()), K)
    reader = knowns(named, sums)
    assert all(low < high for low, high in reader.ranges().values())


# Tables of 2-4 rows of one width (drawn first, so no input is thrown away).
values = st.integers(2, 4).flatmap(lambda width: st.lists(
    st.lists(st.integers(0, 14), min_size=width, max_size=width), min_size=2, max_size=4))


@settings(max_examples=60, deadline=None)
@given(values, values, st.lists(st.integers(0, 12), min_size=2, max_size=5))
def test_no_suppressed_cell_of_linked_tables_can_be_worked_out(first, second, months):
    """Two tables sharing their column margins (and total), the total also split by month."""
    second = [row[:len(first[0])] + [0] * (len(first[0]) - len(row)) for row in second]
    network = Network()
    a, a_sums = two_way(first, network, "a")
    b_cells = {f"b{r}.{c}": Cell(v) for r, row in enumerate(second) for c, v in enumerate(row)}
    # The second table must add up to the first one's columns: its last row takes the difference.
    for c in range(len(first[0])):
        column_total = a[f"aT.{c}"].value
        spent = sum(second[r][c] for r in range(len(second) - 1))
        if spent > column_total:
            return
        b_cells[f"b{len(second) - 1}.{c}"] = Cell(column_total - spent)
    b_rows = {f"b{r}.T": Cell(sum(b_cells[f"b{r}.{c}"].value for c in range(len(first[0]))))
              for r in range(len(second))}
    network.second_table([a[f"aT.{c}"] for c in range(len(first[0]))],
                         [[b_cells[f"b{r}.{c}"] for c in range(len(first[0]))] for r in range(len(second))],
                         list(b_rows.values()), a["aT"])
    b_sums = [([f"b{r}.T"], [f"b{r}.{c}" for c in range(len(first[0]))]) for r in range(len(second))]
    b_sums += [([f"aT.{c}"], [f"b{r}.{c}" for r in range(len(second))]) for c in range(len(first[0]))]
    b_sums.append((["aT"], list(b_rows)))
    if sum(months) > a["aT"].value:
        return
    month_cells = {f"m{i}": Cell(v) for i, v in enumerate(months[:-1])}
    month_cells[f"m{len(months) - 1}"] = Cell(a["aT"].value - sum(months[:-1]))
    network.split(a["aT"], list(month_cells.values()))
    named = {**a, **b_cells, **b_rows, **month_cells}
    suppress(network, list(named.values()), K)
    sums = a_sums + b_sums + [(["aT"], list(month_cells))]
    reader = knowns(named, sums)
    ranges = reader.ranges()
    assert all(low < high for low, high in ranges.values()), {k: v for k, v in ranges.items() if v[0] == v[1]}
    assert all(named[name].status != SHOWN for name, value in named.items() if value.value < K)


@settings(max_examples=60, deadline=None)
@given(values, st.lists(st.sampled_from([SHOWN, SMALL, HIDDEN]), min_size=25, max_size=25))
def test_the_audit_is_exact(table, statuses):
    """``determined`` says a cell is pinned exactly when the integer program finds one value for it."""
    network = Network()
    named, sums = two_way(table, network)
    for cell, status in zip(named.values(), statuses, strict=False):
        # A mark must be true of the value it hides.
        cell.status = status if (status != SMALL or cell.value < K) and (status != HIDDEN or cell.value >= K) \
            else SHOWN
    reader = knowns(named, sums)
    ranges = reader.ranges()
    for name, cell in named.items():
        if not cell.shown:
            low, high = ranges[("t", name, "n")]
            assert determined(network, cell, K) == (low == high), name
