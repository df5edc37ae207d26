"""The delay report: the page, its PDF, CSV and JSON copies, and the supervisors' drill-down.

Every view reads the same GET form (period and filters), asks ``service`` for
the report (suppressed for donors, whole for supervisors, within a donor's
scope always) and only presents it. Exports are audited before they leave.
"""
from __future__ import annotations

from flask import Blueprint, Response, abort, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from ..crypto.downloads import attachment_header
from ..errors import DomainError, NotFound
from ..extensions import db
from ..web import REFUSED, attempt
from . import charts, formats, pdf, service
from .forms import ReportForm

bp = Blueprint("reports", __name__, url_prefix="/reports")


def _read() -> tuple[ReportForm, service.Report | None]:
    """The form as asked, and the report it asks for (None, with the form's errors, when it cannot be made)."""
    me = current_user._get_current_object()
    form = ReportForm(request.args)
    form.offer(me)
    try:
        period, filters = form.ask(me)
        return form, service.build(db.session, me, period, filters)
    except DomainError as exc:
        form.form_errors.append(exc.message)
        return form, None


def _drill(report: service.Report, query: dict):
    """For a supervisor's report: the address of the cases behind a count."""
    if not report.internal:
        return None
    return lambda cell: url_for("reports.cases", figure=cell.figure[0],
                                **{f"d_{k}": v for k, v in cell.figure[1].items()}, **query)


def _filename(report: service.Report, what: str, extension: str) -> str:
    return f"protect-{what}-{report.period.first:%Y-%m}-{report.period.last:%Y-%m}.{extension}"


def _export(report: service.Report, fmt: str, table: str | None = None) -> None:
    if attempt(lambda: service.record_export(db.session, current_user._get_current_object(), report, fmt,
                                             table)) is REFUSED:
        abort(400)


def _download(body: bytes | str, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = attachment_header(filename)
    return response


@bp.route("/")
def index():
    form, report = _read()
    if report is None:
        return render_template("reports/index.html", form=form, report=None), 400
    return render_template("reports/index.html", form=form, report=report, charts=charts.charts(report),
                           headlines=formats.headlines(report), query=form.query(), formats=formats,
                           drill=_drill(report, form.query()))


@bp.route("/report.pdf")
def report_pdf():
    form, report = _read()
    if report is None:
        abort(400)
    html = render_template("reports/pdf.html", report=report, charts=charts.charts(report),
                           headlines=formats.headlines(report), formats=formats,
                           page_counter=pdf.page_counter_css())
    document = pdf.render(html)
    _export(report, "pdf")
    return _download(document, "application/pdf", _filename(report, _("report"), "pdf"))


@bp.route("/<table>.csv")
def table_csv(table: str):
    form, report = _read()
    if report is None:
        abort(400)
    if table not in report.tables:
        abort(404)
    body = formats.to_csv(report, report.tables[table])
    _export(report, "csv", table)
    return _download(body, "text/csv; charset=utf-8", _filename(report, table, "csv"))


@bp.route("/report.json")
def report_json():
    form, report = _read()
    if report is None:
        abort(400)
    key = request.args.get("table")
    if key is not None and key not in report.tables:
        abort(404)
    tables = [report.tables[key]] if key else list(report.tables.values())
    body = formats.to_json(report, tables)
    _export(report, "json", key)
    return _download(body, "application/json", _filename(report, key or _("report"), "json"))


@bp.route("/cases")
def cases():
    """Supervisors: the cases behind one figure of the report."""
    me = current_user._get_current_object()
    form = ReportForm(request.args)
    form.offer(me)
    family = request.args.get("figure")
    dims = {k[2:]: v for k, v in request.args.items() if k.startswith("d_")}
    if family is None:
        form.form_errors.append(_("Choose a figure of the report: each count links to the cases behind it."))
        return render_template("reports/cases.html", form=form, cases=None, total=0, query=form.query())
    try:
        period, filters = form.ask(me)
        found, total = service.figure_cases(db.session, me, period, filters, family, dims)
    except NotFound:
        abort(404)
    except DomainError as exc:
        form.form_errors.append(exc.message)
        return render_template("reports/cases.html", form=form, cases=None, total=0, query=form.query()), 400
    return render_template("reports/cases.html", form=form, cases=found, total=total, query=form.query(),
                           limit=service.DRILL_LIMIT)
