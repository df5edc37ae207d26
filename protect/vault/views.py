from __future__ import annotations

from flask import Blueprint, render_template

from . import service  # noqa: F401  (registers the vault models)

bp = Blueprint("vault", __name__, url_prefix="/vault")


@bp.route("/")
def index():
    return render_template("vault/index.html", vaults=[])
