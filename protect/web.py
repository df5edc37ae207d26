"""What every view does with a service call: commit it, or show why it was refused."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import abort, flash

from .errors import DomainError, PermissionDenied
from .extensions import db

T = TypeVar("T")
REFUSED = object()


def attempt(action: Callable[[], T], *, form=None, success: str | None = None):
    """Run ``action`` (service calls) and commit, flashing ``success``; or roll
    back and show the refusal in ``form`` (or as a flash message). A permission
    refusal is a 403. Returns the action's result, or ``REFUSED``."""
    try:
        result = action()
    except PermissionDenied:
        db.session.rollback()
        abort(403)
    except DomainError as exc:
        db.session.rollback()
        if form is not None:
            form.form_errors.append(exc.message)
        else:
            flash(str(exc.message), "error")
        return REFUSED
    db.session.commit()
    if success:
        flash(success, "success")
    return result
