import re

from protect.accounts import service
from protect.accounts.models import User
from protect.extensions import db
from tests.conftest import Account, login


def test_create_user_prints_totp_secret_for_staff(app, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["protect", "create-user", "--email", "cw@example.org",
                                 "--role", "caseworker", "--password-stdin"],
                           input="a caseworker password\n")
    assert result.exit_code == 0, result.output
    secret = re.search(r"totp_secret: ([A-Z2-7]+)", result.output).group(1)
    user_id = re.search(r"created: ([0-9a-f]+)", result.output).group(1)
    account = Account(user_id, "cw@example.org", "a caseworker password", "caseworker", secret)
    assert login(client, account).location.endswith("/queue")

    journalist = runner.invoke(args=["protect", "create-user", "--email", "j@example.org",
                                     "--role", "journalist", "--password-stdin"], input="a journalist password\n")
    assert journalist.exit_code == 0 and "totp_secret" not in journalist.output
    weak = runner.invoke(args=["protect", "create-user", "--email", "k@example.org",
                               "--role", "journalist", "--password-stdin"], input="short\n")
    assert weak.exit_code != 0 and "Traceback" not in weak.output


def test_demo_is_idempotent(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["protect", "demo"])
    second = runner.invoke(args=["protect", "demo"])
    assert first.exit_code == second.exit_code == 0
    assert first.output == second.output
    assert first.output.count("@demo.protect.local") == 5
    with app.app_context():
        assert db.session.query(User).count() == 5


def test_reset_2fa_forces_reenrolment(app, client, make_account):
    account = make_account("supervisor")
    login(client, account)
    result = app.test_cli_runner().invoke(args=["protect", "reset-2fa", account.email])
    assert result.exit_code == 0
    assert client.get("/overview").status_code == 302  # sessions ended
    fresh = app.test_client()
    response = login(fresh, Account(account.id, account.email, account.password, "supervisor", None))
    assert response.location.endswith("/account/two-step")
    missing = app.test_cli_runner().invoke(args=["protect", "reset-2fa", "nobody@example.org"])
    assert missing.exit_code != 0
