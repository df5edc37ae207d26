"""A real SMTP server (aiosmtpd) on loopback, and an app that sends to it."""
from __future__ import annotations

import dataclasses
import re
import socket
import threading
from collections import Counter
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class Recorder:
    """Keeps every message accepted; refuses the first ``refuse`` DATA commands with 451,
    and the addresses in ``refuse_rcpt`` with 550."""

    def __init__(self, refuse: int = 0):
        self.refuse = refuse
        self.refused = 0
        self.refuse_rcpt: set[str] = set()  # addresses refused at RCPT TO (550)
        self.raw: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse_rcpt:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refused < self.refuse:
                self.refused += 1
                return "451 4.3.0 Try again later"
            self.raw.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 2.0.0 OK"

    # A method, not a property: aiosmtpd inspects every attribute of its handler
    # (inspect.getmembers) at each new connection, which would parse them all.
    def messages(self) -> list:
        """(recipients, parsed message) for every message accepted so far."""
        with self.lock:
            raw = list(self.raw)
        return [(rcpts, message_from_bytes(data, policy=policy.default)) for rcpts, data in raw]

    def message_ids(self) -> Counter:
        """How many times each Message-ID arrived (read from the raw bytes: cheap for 10,000)."""
        with self.lock:
            raw = list(self.raw)
        ids = Counter()
        for _, data in raw:
            found = MESSAGE_ID.findall(data.split(b"\r\n\r\n", 1)[0])
            assert len(found) == 1, "every message carries one Message-ID"
            ids[found[0].decode()] += 1
        return ids


class SMTPServer:
    """An aiosmtpd server that can be started late (to play "the server was down")."""

    def __init__(self, port: int, handler: Recorder):
        self.port = port
        self.handler = handler
        self.controller = None

    def start(self):
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     server_hostname="localhost")
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp():
    """A running SMTP server that accepts everything."""
    server = SMTPServer(free_port(), Recorder()).start()
    yield server
    server.stop()


@pytest.fixture
def smtp_factory():
    """Make servers (started or not) with a given handler; all stopped afterwards."""
    servers = []

    def make(refuse: int = 0, start: bool = True) -> SMTPServer:
        server = SMTPServer(free_port(), Recorder(refuse))
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


def use_mail(app, server: SMTPServer, **more) -> None:
    """Point the app's settings at ``server`` (plain SMTP on loopback)."""
    settings = app.extensions["protect.settings"]
    values = dict(mail_server=f"127.0.0.1:{server.port}", mail_starttls=False, mail_timeout_seconds=5,
                  mail_from="alertas@protect.example")
    app.extensions["protect.settings"] = dataclasses.replace(settings, **{**values, **more})


def self_signed(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (and its key), as PEM files in ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def smtp_tls(tmp_path):
    """An SMTP server that requires STARTTLS, then a login (user "protect", password "s3cret")."""
    import ssl

    from aiosmtpd.smtp import AuthResult

    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((mechanism, auth_data.login, session.ssl is not None))
        return AuthResult(success=auth_data.login == b"protect" and auth_data.password == b"s3cret")

    handler = Recorder()
    server = SMTPServer(free_port(), handler)
    server.controller = Controller(handler, hostname="127.0.0.1", port=server.port, server_hostname="localhost",
                                   tls_context=context, require_starttls=True, authenticator=authenticator,
                                   auth_require_tls=True)
    server.controller.start()
    server.cert = cert
    server.logins = logins
    yield server
    server.stop()
