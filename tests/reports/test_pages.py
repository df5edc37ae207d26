"""The report's pages and copies: donors (suppressed, within their scope), supervisors (whole, with
the cases behind each figure), the PDF's text, CSV and JSON, their audit, bad input, languages."""
from __future__ import annotations

import csv
import io
import re
import subprocess

import pytest
from sqlalchemy import event, select

from protect.accounts.models import User
from protect.audit.models import AuditEntry
from protect.extensions import db
from tests.conftest import csrf_token, login
from tests.reports.conftest import PERIOD_ARGS, Population, set_min_cell, utc, write_hand_made

EN = {"Accept-Language": "en"}


@pytest.fixture
def seeded(app, frozen, make_account):
    """The hand-made population of test_correctness; returns a signed-in-able donor and supervisor."""
    cw1, cw2 = make_account("caseworker"), make_account("caseworker")
    with app.app_context():
        write_hand_made(Population(db.session), db.session.get(User, cw1.id), db.session.get(User, cw2.id))
    return {"donor": make_account("donor"), "supervisor": make_account("supervisor")}


def scope(app, account, **scope) -> None:
    with app.app_context():
        db.session.get(User, account.id).report_scope = scope
        db.session.commit()


def exports(app) -> list[tuple[str, dict]]:
    import json
    with app.app_context():
        return [(e.actor_id, json.loads(e.details)) for e in db.session.execute(
            select(AuditEntry).where(AuditEntry.action == "report.exported").order_by(AuditEntry.id)).scalars()]


def test_donor_page_has_charts_tables_and_small_figures_hidden(app, client, seeded):
    set_min_cell(app, 3)
    login(client, seeded["donor"])
    response = client.get(f"/reports/?{PERIOD_ARGS}", headers=EN)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    # Server-made SVG charts, each with its title, and no inline style anywhere (the CSP forbids it).
    for chart in ("chart-delay", "chart-lateness", "chart-delays", "chart-map"):
        assert f'aria-labelledby="{chart}-title {chart}-desc"' in page, chart
    assert page.count("<svg") == page.count('role="img"') == page.count("<desc id=")
    assert "style=" not in page and "<script" not in page
    # Five requests (three in January): the two of February are fewer than 3.
    assert "&lt; 3" in page
    requests = page[page.index('id="table-requests"'):]
    assert re.search(r'<th scope="row">2026-02</th><td class="num"><span class="suppressed">&lt; 3</span>',
                     requests)
    assert 'id="table-stages"' in page and 'id="table-by_state"' in page
    assert "/reports/cases" not in page                      # no drill-down for donors
    assert "Median time" in page and "Download the report (PDF)" in page


def test_supervisor_sees_every_figure_and_the_cases_behind_it(app, client, seeded):
    login(client, seeded["supervisor"])
    page = client.get(f"/reports/?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    assert "&lt; 5" not in page and "Internal version" in page
    # The not-admitted request of January links to its case.
    link = re.search(r'href="(/reports/cases\?[^"]*d_outcome=not_admitted[^"]*d_month=0[^"]*|'
                     r'/reports/cases\?[^"]*d_month=0[^"]*d_outcome=not_admitted[^"]*)"', page)
    assert link, "no link from the January not-admitted figure"
    listing = client.get(link.group(1).replace("&amp;", "&"), headers=EN)
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert "1 case." in text and text.count('href="/cases/') == 1
    # The implementation stage done in the period: five cases.
    five = client.get(f"/reports/cases?{PERIOD_ARGS}&figure=done&d_stage=implementation", headers=EN)
    assert five.get_data(as_text=True).count('href="/cases/') == 5
    assert client.get(f"/reports/cases?{PERIOD_ARGS}&figure=done&d_stage=nonsense").status_code == 404
    assert client.get(f"/reports/cases?{PERIOD_ARGS}&figure=nothing").status_code == 404


def test_donors_may_not_see_the_cases_behind_a_figure(client, seeded):
    login(client, seeded["donor"])
    assert client.get(f"/reports/cases?{PERIOD_ARGS}&figure=done").status_code == 403


def test_period_and_filters_are_a_plain_get_form(client, seeded):
    login(client, seeded["supervisor"])
    page = client.get("/reports/?start=2026-02&end=2026-02&state=VER", headers=EN).get_data(as_text=True)
    assert '<form method="get"' in page
    assert re.search(r'<option selected value="2026-02">2026-02</option>', page)
    # Only February, only Veracruz: one request (c5, still waiting for its triage decision).
    table = page[page.index('id="table-requests"'):]
    assert ">2026-01<" not in table[:table.index("</table>")]
    json = client.get("/reports/report.json?start=2026-02&end=2026-02&state=VER&table=requests").get_json()
    assert json["tables"][0]["rows"][-1]["values"]["received"] == 1


@pytest.mark.parametrize("args, message", [
    ("start=2026-02&end=2026-01", "The last month comes before the first one."),
    ("start=2026-03&end=2026-03", "The report covers the months up to 2026-02"),
    ("start=tomorrow&end=2026-01", "Choose the months from the lists."),
    ("start=2020-01&end=2026-02", "Choose at most 60 months."),
    ("start=2026-01&end=2026-02&state=XX", "Choose a state from the list."),
    ("start=2026-01&end=2026-02&gender=robot", "Choose a gender from the list."),
])
def test_bad_input_is_a_clear_400(client, seeded, args, message):
    login(client, seeded["donor"])
    response = client.get(f"/reports/?{args}", headers=EN)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    for path in ("/reports/report.pdf", "/reports/report.json", "/reports/requests.csv"):
        assert client.get(f"{path}?{args}").status_code == 400


def test_donor_scope_holds_everywhere(app, client, seeded):
    donor = seeded["donor"]
    scope(app, donor, states=["OAX", "GRO"], beneficiaries=[])
    set_min_cell(app, 1)  # every figure shown: the test is about which cases count
    login(client, donor)
    data = client.get(f"/reports/report.json?{PERIOD_ARGS}").get_json()
    tables = {t["key"]: t for t in data["tables"]}
    received = {r["key"]: r["values"]["received"] for r in tables["by_state"]["rows"]}
    assert received == {"OAX": 1, "GRO": 1, "total": 2}  # no row for a state outside the scope
    stages = {r["key"]: r["values"] for r in tables["stages"]["rows"]}
    assert stages["implementation"]["completed"] == 2          # c3 (OAX) and c4 (GRO)
    rows = list(csv.reader(io.StringIO(client.get(f"/reports/by_state.csv?{PERIOD_ARGS}").get_data(as_text=True))))
    assert [r[0] for r in rows[1:]] == ["GRO", "OAX", "total"]
    page = client.get(f"/reports/?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    assert '<option value="VER">' not in page and '<option value="OAX">' in page
    # A state outside the scope cannot be asked for, on any copy.
    for path in ("/reports/", "/reports/report.json", "/reports/report.pdf", "/reports/by_state.csv"):
        assert client.get(f"{path}?{PERIOD_ARGS}&state=VER", headers=EN).status_code == 400
    text = pdf_text(client.get(f"/reports/report.pdf?{PERIOD_ARGS}", headers=EN).data)
    assert "2 requests received." in text


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    return subprocess.run(["pdftotext", "-layout", "-", "-"], input=data, capture_output=True,
                          check=True).stdout.decode()


def test_pdf_has_the_headline_figures_and_page_numbers(client, seeded):
    login(client, seeded["supervisor"])
    response = client.get(f"/reports/report.pdf?{PERIOD_ARGS}", headers=EN)
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="protect-report-2026-01-2026-02.pdf"')
    text = " ".join(pdf_text(response.data).split())
    assert "Measures implemented: median 31 days (legal term: 30 natural days). 40% on time." in text
    assert "From the request to the measures implemented: median 8 days." in text
    assert "Triage: median 2 h (legal term: 3 hours). 50% on time." in text
    assert "5 requests received. 75% of those decided were admitted." in text
    assert "How these figures are made" in text and "Nearest rank" in text
    assert "Page 2 of" in text


def test_exports_are_audited_with_codes_only(app, client, seeded):
    login(client, seeded["donor"])
    client.get(f"/reports/requests.csv?{PERIOD_ARGS}&beneficiary=journalist")
    client.get(f"/reports/report.json?{PERIOD_ARGS}")
    client.get(f"/reports/report.pdf?{PERIOD_ARGS}")
    assert client.get(f"/reports/nonsense.csv?{PERIOD_ARGS}").status_code == 404
    assert client.get(f"/reports/report.json?{PERIOD_ARGS}&table=nonsense").status_code == 404
    found = exports(app)
    assert [(d["format"], d["table"]) for _, d in found] == [("csv", "requests"), ("json", None), ("pdf", None)]
    assert all(actor == seeded["donor"].id and d["suppressed"] for actor, d in found)
    assert found[0][1]["beneficiaries"] == ["journalist"] and found[0][1]["first"] == "2026-01-01"


def test_csv_and_json_show_the_marks_not_the_numbers(client, seeded):
    login(client, seeded["donor"])
    body = client.get(f"/reports/requests.csv?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:3] == ["Code", "Requests received and the triage decision, by month", "Received"]
    assert rows[1][:3] == ["0", "2026-01", "< 5"] and rows[-1][:3] == ["total", "The whole period", "5"]
    data = client.get(f"/reports/report.json?{PERIOD_ARGS}").get_json()
    assert data["suppression"] == {"min_cases": 5, "small": "< 5", "hidden": "•"}
    assert data["period"]["first"] == "2026-01" and data["period"]["last"] == "2026-02"
    numbers = [v for t in data["tables"] for r in t["rows"] for c in t["columns"] if c["kind"] == "count"
               for v in [r["values"][c["key"]]] if isinstance(v, int)]
    assert numbers and min(numbers) >= 5  # every count published rests on 5 cases or more


def test_spanish_and_english(client, seeded):
    login(client, seeded["supervisor"])
    es = client.get(f"/reports/?{PERIOD_ARGS}", headers={"Accept-Language": "es"}).get_data(as_text=True)
    en = client.get(f"/reports/?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    assert '<html lang="es">' in es and '<html lang="en">' in en
    assert "Clasificación inicial" in es and "Triage" in en
    assert "Implementación de medidas" in es


def test_an_empty_period_says_so(client, frozen, make_account):
    donor = make_account("donor")
    login(client, donor)
    page = client.get("/reports/", headers=EN).get_data(as_text=True)
    assert "There are no cases in the period yet" in page
    assert re.search(r'<option selected value="2025-03">', page) and re.search(r'<option selected value="2026-02">', page)


def test_the_report_takes_a_fixed_number_of_queries(app, client, frozen, make_account):
    """No query per case, month or figure: the same statements for 6 cases as for 36."""
    supervisor = make_account("supervisor")
    login(client, supervisor)
    assert client.get("/reports/report.json?start=2025-03&end=2026-03").status_code == 200  # the facts made
    counts = []
    for _ in range(2):
        cw = make_account("caseworker")
        with app.app_context():
            for _ in range(3):  # three hand-made populations more
                write_hand_made(Population(db.session), db.session.get(User, cw.id), db.session.get(User, cw.id))
            frozen.advance(minutes=16)  # past the age at which kept figures are shown again
            statements = []

            def listener(*args, statements=statements):
                statements.append(1)

            event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert client.get("/reports/report.json?start=2025-03&end=2026-03").status_code == 200
        finally:
            with app.app_context():
                event.remove(db.engine, "before_cursor_execute", listener)
        counts.append(len(statements))
    # (Each look brings the facts up to the new cases: a delete and an insert per kind of fact.)
    assert counts[0] == counts[1] and counts[0] <= 50, counts


def test_admin_sets_a_donors_scope(app, client, make_account):
    admin, donor = make_account("admin"), make_account("donor")
    login(client, admin)
    path = f"/admin/users/{donor.id}"
    token = csrf_token(client, path)
    response = client.post(path, data={"csrf_token": token, "role": "donor", "active": "y",
                                       "scope_states": ["VER", "GRO"], "scope_beneficiaries": ["journalist"]})
    assert response.status_code == 302
    with app.app_context():
        assert db.session.get(User, donor.id).report_scope == {"states": ["GRO", "VER"],
                                                               "beneficiaries": ["journalist"]}
        change = db.session.execute(select(AuditEntry).where(
            AuditEntry.action == "user.report_scope_changed")).scalar_one()
        assert change.target == donor.id and "VER" in change.details
    page = client.get(path).get_data(as_text=True)
    assert re.search(r'<input checked id="scope_states-\d+" name="scope_states" type="checkbox" value="VER">', page)
    # A code that is no state, or a scope on an account that is no donor's, is refused with a message.
    bad = client.post(path, data={"csrf_token": token, "role": "donor", "active": "y", "scope_states": ["XX"]},
                      headers=EN)
    assert bad.status_code == 200 and "Choose states and kinds of beneficiary from the lists." in bad.get_data(as_text=True)
    staff = make_account("caseworker")
    other = client.post(f"/admin/users/{staff.id}", headers=EN, data={
        "csrf_token": token, "role": "caseworker", "active": "y", "scope_states": ["VER"]})
    assert "Only donor accounts have a report scope." in other.get_data(as_text=True)
    # Clearing every box gives the donor the whole programme again.
    client.post(path, data={"csrf_token": token, "role": "donor", "active": "y"})
    with app.app_context():
        assert db.session.get(User, donor.id).report_scope is None


def test_new_donor_with_a_scope(app, client, make_account):
    login(client, make_account("admin"))
    token = csrf_token(client, "/admin/users/new")
    response = client.post("/admin/users/new", data={
        "csrf_token": token, "email": "fundacion@example.org", "role": "donor",
        "password": "a long enough password for a donor", "scope_beneficiaries": ["defender"]})
    assert response.status_code == 302
    with app.app_context():
        donor = db.session.execute(select(User).where(User.role == "donor")).scalar_one()
        assert donor.report_scope == {"states": [], "beneficiaries": ["defender"]}


def test_without_small_cells_donors_see_the_supervisors_figures(app, client, seeded):
    """Suppression takes nothing else away: with k = 1 the donor's copy is the supervisor's."""
    set_min_cell(app, 1)
    copies = []
    for who in ("donor", "supervisor"):
        login(client, seeded[who])
        data = client.get(f"/reports/report.json?{PERIOD_ARGS}").get_json()
        copies.append([t for t in data["tables"] if t["key"] != "caseload"])  # names for supervisors only
        client.post("/logout", data={"csrf_token": csrf_token(client, "/account")})
    assert copies[0] == copies[1]


def test_every_figure_of_the_supervisors_page_lists_its_cases(client, seeded):
    login(client, seeded["supervisor"])
    page = client.get(f"/reports/?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    links = set(re.findall(r'<a href="(/reports/cases\?[^"]+)">([\d,]+)</a>', page))
    families = {re.search(r"figure=(\w+)", href).group(1) for href, _ in links}
    assert families == {"done", "waiting", "open_at", "requests", "measures", "threats"}
    for href, figure in links:
        listing = client.get(href.replace("&amp;", "&"), headers=EN).get_data(as_text=True)
        found = int(re.search(r"(\d+) cases?\.", listing).group(1))
        # Requests count cases; clocks, measures and reports may count a case twice.
        assert 1 <= found <= int(figure.replace(",", "")), (href, figure, found)
        if "figure=requests" in href:
            assert found == int(figure), href


READS_FACTS = re.compile(r"^\s*SELECT\b.*\bFROM report_(clocks|requests|measures|threats)\b", re.S)


def aggregate_statements(app) -> list[str]:
    """The statements that read a report's aggregates from the facts, as they run (until the app
    is done)."""
    made: list[str] = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute",
                     lambda conn, cursor, sql, *args: made.append(sql) if READS_FACTS.match(sql) else None)
    return made


def test_kept_figures_serve_every_look_until_their_data_change_and_they_are_old(app, client, seeded, frozen):
    """The page, then its JSON, then a look in another process (nothing in its memory), then a
    donor's look at the same months: the aggregates are read once. A new request received does
    not make them again for 15 minutes (a stream of new requests would otherwise make them
    again at every look); after that the next look makes them afresh."""
    made = aggregate_statements(app)
    login(client, seeded["supervisor"])
    client.get(f"/reports/?{PERIOD_ARGS}")
    once = len(made)
    before = client.get(f"/reports/report.json?{PERIOD_ARGS}&table=requests").get_json()
    assert once >= 5 and len(made) == once
    app.extensions.pop("protect.reports")  # another worker, or this one restarted
    assert client.get(f"/reports/report.json?{PERIOD_ARGS}&table=requests").get_json() == before
    donor = app.test_client()
    login(donor, seeded["donor"])
    assert "Requests received" in donor.get(f"/reports/?{PERIOD_ARGS}", headers=EN).get_data(as_text=True)
    assert len(made) == once
    with app.app_context():
        cw = db.session.execute(select(User).where(User.role == "caseworker")).scalars().first()
        Population(db.session).case(utc(2026, 1, 20, 12), assignee=cw)
        db.session.commit()
    frozen.advance(minutes=14)
    meanwhile = client.get(f"/reports/report.json?{PERIOD_ARGS}&table=requests").get_json()
    assert len(made) == once and meanwhile == before
    frozen.advance(minutes=2)
    after = client.get(f"/reports/report.json?{PERIOD_ARGS}&table=requests").get_json()
    assert len(made) == 2 * once
    def total(data):
        return data["tables"][0]["rows"][-1]["values"]["received"]
    assert (total(before), total(meanwhile), total(after)) == (5, 5, 6)


def test_the_sweeper_makes_kept_reports_again_in_the_background(app, client, seeded, frozen):
    """``refresh`` (run by every sweep) makes the defaults ahead of the first look, makes again
    the kept reports whose data changed (a few a run, the stalest first), and drops those nobody
    asked for in a week; a look after it reads no aggregate."""
    from protect.reports import service
    from protect.reports.models import PreparedReport

    def refresh():
        with app.app_context():
            return service.refresh(db.session)

    def kept():
        with app.app_context():
            return {(r.first.isoformat()[:7], r.last.isoformat()[:7], str(r.filters)): r.made_at
                    for r in db.session.execute(select(PreparedReport)).scalars()}

    scope(app, seeded["donor"], states=["OAX"])
    def january():
        page = client.get(f"/reports/report.json?{PERIOD_ARGS}&table=requests").get_json()
        return page["tables"][0]["rows"][0]["values"]["received"]

    login(client, seeded["supervisor"])
    received = january()
    assert refresh() == 2  # the donor's default (in their scope) and the supervisors'
    assert set(kept()) == {("2026-01", "2026-02", "{}"), ("2025-03", "2026-02", "{'states': ['OAX']}"),
                           ("2025-04", "2026-03", "{}")}
    assert refresh() == 0
    with app.app_context():
        cw = db.session.execute(select(User).where(User.role == "caseworker")).scalars().first()
        Population(db.session).case(utc(2026, 1, 20, 12), assignee=cw)
        db.session.commit()
    frozen.advance(seconds=301)
    made_before = kept()
    assert refresh() == 2 and refresh() == 1 and refresh() == 0
    assert all(made > made_before[key] for key, made in kept().items())
    made = aggregate_statements(app)
    assert january() == received + 1 and made == []
    frozen.advance(days=8)
    result = app.test_cli_runner().invoke(args=["protect", "sweep"])
    assert result.exit_code == 0 and "delay reports made again: 2" in result.output, result.output
    assert ("2026-01", "2026-02", "{}") not in kept() and len(kept()) == 2


def test_a_stage_met_at_once_everywhere_still_draws(app):
    """Every median and 90th percentile 0 (each triage in the second it arrived): the
    log-scale chart must still draw (it was a 500, found by the fuzz test)."""
    from types import SimpleNamespace

    from protect.reports import charts

    row = SimpleNamespace(key="triage", label="Triage", unit="hours", values=[3, 3, 0, 0, 0, 0, 0, 0])
    report = SimpleNamespace(tables={"stages": SimpleNamespace(rows=[row])}, terms={"triage": (1, "days")})
    with app.test_request_context("/"):
        assert "<svg" in str(charts.delay_bars(report))


def test_figures_kept_by_an_earlier_version_are_not_read(app, client, seeded, frozen, monkeypatch):
    """After an upgrade that changes what is kept, a look makes the figures afresh."""
    from protect.reports import service

    made = aggregate_statements(app)
    login(client, seeded["supervisor"])
    before = client.get(f"/reports/report.json?{PERIOD_ARGS}").get_json()
    once = len(made)
    app.extensions.pop("protect.reports")
    monkeypatch.setattr(service, "FIGURES_FORMAT", service.FIGURES_FORMAT + 1)
    assert client.get(f"/reports/report.json?{PERIOD_ARGS}").get_json() == before and len(made) == 2 * once


def test_a_kept_report_another_sweeper_claimed_is_left_to_it(app, client, seeded, frozen):
    """Sweepers on several hosts: the one whose claim finds the report claimed meanwhile (its
    made_at moved since it was read) leaves it to the other."""
    from sqlalchemy import update

    from protect.reports import service
    from protect.reports.models import PreparedReport

    login(client, seeded["supervisor"])
    client.get(f"/reports/?{PERIOD_ARGS}")
    with app.app_context():
        assert service.refresh(db.session) == 2  # the defaults: three reports kept now
        cw = db.session.execute(select(User).where(User.role == "caseworker")).scalars().first()
        Population(db.session).case(utc(2026, 1, 20, 12), assignee=cw)
        db.session.commit()
    frozen.advance(seconds=301)

    def other_host_claims_first(conn, cursor, sql, parameters, *args):
        if sql.startswith("UPDATE prepared_reports") and not claimed:
            claimed.append(parameters)
            with db.engine.begin() as other:
                other.execute(update(PreparedReport).values(made_at=frozen()))
    claimed: list = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", other_host_claims_first)
        try:
            # Its first claim fails (the other host has all three now); the two it may still
            # make are the ones the other host claimed after it read them: none.
            assert service.refresh(db.session) == 0 and len(claimed) == 1
        finally:
            event.remove(db.engine, "before_cursor_execute", other_host_claims_first)
