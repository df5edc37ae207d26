"""Small-cell suppression for the donors' report, with complementary suppression.

Every count the report publishes is a ``Cell``. A cell resting on fewer than
k cases is *small* and shown as "< k" (zero included: "no one" is as telling
as "one"). A small cell could still be worked out from the figures around it
(a total minus the other cells of its row), so more cells are *hidden* until
none can be.

The tables' sums are kept as a flow network: every cell is an edge, and each
additive relation (a row adds up to its total, a column to its total, the
months of a year to the year, the reasons of "not admitted" to the
not-admitted total, ...) is the flow balance at one node. Tables that share a
total (the received requests by month, by state, by gender, ...) are joined at
that total's edge, so differencing across them is covered too. The report
builds its tables in that shape (``Network.table`` and ``Network.split``);
relations the network cannot express are not published.

What a reader knows about a suppressed cell: "< k" means 0 to k-1; "•" (a
hidden cell, always counting k or more) means at least k. Given everything
published in the report, a suppressed cell's value is determined exactly when
no alternative table fits the same figures; alternatives are circulations, so
a cell is free to move by one exactly when it lies on a cycle of the residual
graph of the suppressed cells (each may go up unless at its upper bound, down
unless at its lower). ``suppress`` hides further cells (the cheapest path that
closes such a cycle, cheapest meaning the smallest published counts) until
every suppressed cell lies on one. Since the constraint matrix of a network is
totally unimodular, "not determined" holds over whole numbers too: each
suppressed cell has at least two possible values consistent with the report.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

SHOWN, SMALL, HIDDEN = "shown", "small", "hidden"


@dataclass(eq=False)
class Cell:
    """A count: ``value`` items (cases, deadlines, measures, reports) from ``cases`` distinct cases."""

    value: int
    cases: int = -1  # -1: as many cases as items
    figure: tuple | None = None  # what it counts, for the supervisors' drill-down to the cases
    status: str = SHOWN

    def __post_init__(self):
        if self.cases < 0:
            self.cases = self.value

    @property
    def shown(self) -> bool:
        return self.status == SHOWN


@dataclass
class _Edge:
    cell: Cell
    tail: int
    head: int


@dataclass
class Network:
    """The additive relations between a report's cells."""

    edges: dict[int, _Edge] = field(default_factory=dict)  # by id(cell)
    _nodes: itertools.count = field(default_factory=itertools.count)

    def node(self) -> int:
        return next(self._nodes)

    def _add(self, cell: Cell, tail: int, head: int) -> None:
        if id(cell) in self.edges:
            raise ValueError("a cell takes part in the network once; use split() for a second sum")
        self.edges[id(cell)] = _Edge(cell, tail, head)

    def table(self, cells: list[list[Cell]], row_totals: list[Cell], column_totals: list[Cell],
              total: Cell) -> None:
        """A two-way table with both margins: rows add up to their totals, columns to theirs."""
        top, bottom = self.node(), self.node()
        rows = [self.node() for _ in row_totals]
        columns = [self.node() for _ in column_totals]
        self._add(total, bottom, top)
        for r, row_total in zip(rows, row_totals, strict=True):
            self._add(row_total, top, r)
        for c, column_total in zip(columns, column_totals, strict=True):
            self._add(column_total, c, bottom)
        for r, row in zip(rows, cells, strict=True):
            for c, cell in zip(columns, row, strict=True):
                self._add(cell, r, c)

    def second_table(self, column_totals: list[Cell], cells: list[list[Cell]], row_totals: list[Cell],
                     total: Cell) -> None:
        """Another two-way table with the same columns (and total) as one made by ``table``.

        Its cells flow from the shared column totals to its own rows, which
        flow into the shared total: every sum of both tables still balances.
        """
        bottom = self.edges[id(total)].tail
        if any(self.edges[id(c)].head != bottom for c in column_totals):
            raise ValueError("second_table() shares the margins of one table() only")
        rows_end = self.node()
        rows = [self.node() for _ in row_totals]
        for j, column_total in enumerate(column_totals):
            column = self.edges[id(column_total)].head = self.node()
            for r, row in zip(rows, cells, strict=True):
                self._add(row[j], column, r)
        for r, row_total in zip(rows, row_totals, strict=True):
            self._add(row_total, r, rows_end)
        self.edges[id(total)].tail = rows_end

    def split(self, total: Cell, parts: list[Cell]) -> None:
        """``total`` is the sum of ``parts`` (again, if it is already the sum of something else)."""
        edge = self.edges.get(id(total))
        if edge is None:
            a, b = self.node(), self.node()
            self._add(total, b, a)
            edge = self.edges[id(total)]
        middle = self.node()
        for part in parts:
            self._add(part, edge.tail, middle)
        edge.tail = middle

    def sums(self) -> list[tuple[list[Cell], list[Cell]]]:
        """Every relation as (cells flowing in, cells flowing out) of a node: in == out."""
        nodes: dict[int, tuple[list, list]] = {}
        for edge in self.edges.values():
            nodes.setdefault(edge.head, ([], []))[0].append(edge.cell)
            nodes.setdefault(edge.tail, ([], []))[1].append(edge.cell)
        return list(nodes.values())


def bounds(cell: Cell, k: int) -> tuple[int, float]:
    """What a reader of the report knows about a cell's value."""
    if cell.status == SMALL:
        return 0, k - 1
    if cell.status == HIDDEN:
        return k, float("inf")
    return cell.value, cell.value


def _incidence(network: Network) -> dict[int, list[_Edge]]:
    at: dict[int, list[_Edge]] = {}
    for edge in network.edges.values():
        at.setdefault(edge.tail, []).append(edge)
        at.setdefault(edge.head, []).append(edge)
    return at


def _moves(edge: _Edge, node: int, k: int, hiding: bool = False):
    """Where a residual arc of ``edge`` leads from ``node``: (next node, cost of hiding it or 0)."""
    cell = edge.cell
    if cell.shown:
        if not hiding:
            return
        # Hidden, it would be known only as >= k: it may always rise, and fall if above k.
        low, high, cost = k, float("inf"), cell.value + 1
    else:
        (low, high), cost = bounds(cell, k), 0
    if edge.tail == node and cell.value < high:
        yield edge.head, cost
    if edge.head == node and cell.value > low:
        yield edge.tail, cost


def _reaches(at, cell: Cell, start: int, goal: int, k: int) -> bool:
    """Whether a residual path of the suppressed cells but ``cell`` leads from ``start`` to ``goal``
    (``_moves`` without hiding, written out: this search runs a thousand times per report)."""
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for edge in at.get(node, ()):
            other = edge.cell
            if other is cell or other.status == SHOWN:
                continue
            small = other.status == SMALL
            if edge.tail == node and (not small or other.value < k - 1):
                nxt = edge.head
            elif edge.head == node and other.value > (0 if small else k):
                nxt = edge.tail
            else:
                continue
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def determined(network: Network, cell: Cell, k: int, at=None) -> bool:
    """Whether the published figures pin ``cell`` (a suppressed cell of ``network``) to one value."""
    at = at if at is not None else _incidence(network)
    edge = network.edges[id(cell)]
    low, high = bounds(cell, k)
    can_rise = cell.value < high and _reaches(at, cell, edge.head, edge.tail, k)
    can_fall = cell.value > low and _reaches(at, cell, edge.tail, edge.head, k)
    return not (can_rise or can_fall)


def _cheapest_cover(network: Network, at, cell: Cell, k: int) -> list[Cell] | None:
    """The published cells to hide (least total count) so that ``cell`` lies on a residual cycle."""
    edge = network.edges[id(cell)]
    low, high = bounds(cell, k)
    best = None
    for may, start, goal in ((cell.value < high, edge.head, edge.tail), (cell.value > low, edge.tail, edge.head)):
        if may:
            found = _dijkstra(at, cell, start, goal, k)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
    return None if best is None else best[1]


def _dijkstra(at, cell: Cell, start: int, goal: int, k: int):
    tie = itertools.count()
    queue: list[tuple[int, int, int, tuple[Cell, ...]]] = [(0, next(tie), start, ())]
    done: set[int] = set()
    while queue:
        cost, _, node, path = heapq.heappop(queue)
        if node == goal:
            return cost, [c for c in path if c.shown]
        if node in done:
            continue
        done.add(node)
        for edge in at.get(node, ()):
            if edge.cell is cell:
                continue
            for nxt, price in _moves(edge, node, k, hiding=True):
                if nxt not in done:
                    heapq.heappush(queue, (cost + price, next(tie), nxt, path + (edge.cell,)))
    return None


def suppress(network: Network, cells: list[Cell], k: int) -> None:
    """Mark ``cells`` small or hidden so that no suppressed cell of ``network`` is determined.

    ``cells`` are all the report's cells, in the network or not (a cell in no
    relation needs only its own "< k"). With k <= 1 nothing is suppressed.
    """
    if k <= 1:
        return
    for cell in cells:
        if cell.cases < k:
            cell.status = SMALL if cell.value < k else HIDDEN
    order = [e.cell for e in network.edges.values()]
    at = _incidence(network)
    changed = True
    while changed:
        changed = False
        for cell in order:
            if cell.shown or not determined(network, cell, k, at):
                continue
            cover = _cheapest_cover(network, at, cell, k)
            if cover is None:  # no cycle can be closed around it: hide everything still shown
                cover = [e.cell for e in network.edges.values() if e.cell.shown]
            for other in cover:
                other.status = HIDDEN
            changed = changed or bool(cover)
