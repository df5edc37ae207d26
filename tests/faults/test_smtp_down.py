"""The SMTP server down for an hour of simulated time, with the sweeper running
every minute throughout (tests/notify covers a shorter outage with no new
mail meanwhile): notifications made before and during the outage wait in
the outbox, failing with backoff and never giving up; once the server is
back every e-mail arrives exactly once."""
from __future__ import annotations

from protect.deadlines import sweeper
from protect.extensions import db, utcnow
from tests.notify.conftest import smtp_factory, use_mail  # noqa: F401  (fixture)
from tests.notify.test_mail import advance, outbox, people, submitted  # noqa: F401  (fixture)


def _minutes(app, n: int, until=None) -> None:
    """``n`` simulated minutes of the embedded sweeper's rounds (deadlines, vaults, mail)."""
    for _ in range(n):
        sweeper.run_once(app.extensions["protect.settings"])
        advance(app, minutes=1)
        if until is not None and until():
            return


def test_smtp_down_for_an_hour_then_each_mail_once(app, people, smtp_factory):  # noqa: F811
    server = smtp_factory(start=False)      # nothing listens on its port
    use_mail(app, server)
    submitted(people, assign=True)
    submitted(people)
    advance(app, hours=2, minutes=30)       # the triage clocks are due soon: mail to send
    went_down = utcnow()

    _minutes(app, 60)                       # half-way the clocks go overdue: more mail
    waiting = outbox()
    assert any(row.created_at > went_down for row in waiting), "no mail was made during the outage"
    assert {row.state for row in waiting} == {"pending"}, "an hour down: nothing gave up"
    assert all(row.attempts >= 1 and row.last_error == "ConnectionRefusedError" for row in waiting)
    assert server.handler.messages() == []
    db.session.remove()

    server.start()
    # Backoff is at most an hour: within the next one everything goes out.
    _minutes(app, 61, until=lambda: not outbox("pending"))
    _minutes(app, 5)                        # and more rounds send nothing twice
    rows = outbox()
    assert {row.state for row in rows} == {"sent"}, [(r.state, r.attempts) for r in rows]
    assert len(rows) >= len(waiting)
    ids = server.handler.message_ids()
    assert set(ids.values()) == {1}, "an e-mail arrived twice"
    assert len(ids) == len(rows), "an e-mail was lost"
