"""Real local receivers for notifications: an HTTP server (webhooks) and aiosmtpd (SMTP, STARTTLS, login)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from backend.runtime.kafka import free_port

SMTP_USER, SMTP_PASSWORD = "costlake-mailer", "s3cret-Mail-pw"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class HttpReceiver:
    """Answers each POST with the next status of `script` (then 200) and keeps what it got."""

    url: str
    script: list[int] = field(default_factory=list)
    reply: bytes = b"ok"
    retry_after: str | None = None
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, token: str = "T0K3N-abc/secret") -> str:
        """A webhook URL whose path is a token, like Slack's and Teams'."""
        return f"{self.url}/hooks/{token}"


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                receiver.received.append(Received(self.path, dict(self.headers), json.loads(raw)))
                status = receiver.script.pop(0) if receiver.script else 200
            self.send_response(status)
            if status == 429 and receiver.retry_after:
                self.send_header("Retry-After", receiver.retry_after)
            body = receiver.reply if status < 300 else b"no_service"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # the test output stays readable
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


# --- SMTP ------------------------------------------------------------------------------------------------
@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated: bool
    tls: bool


@dataclass
class SmtpReceiver:
    host: str
    port: int
    ca_file: Path
    mails: list[Mail] = field(default_factory=list)
    refuse_next: list[str] = field(default_factory=list)  # SMTP replies given to DATA before accepting


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost, its own CA, made with the `cryptography` package."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "costlake-test-smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "smtp-cert.pem", tmp / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@pytest.fixture
def smtp_receiver(tmp_path: Path) -> Iterator[SmtpReceiver]:
    """aiosmtpd on 127.0.0.1 that requires STARTTLS and a login (AUTH only after TLS), like a real submission port."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert_file, key_file = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    receiver = SmtpReceiver("127.0.0.1", free_port(), cert_file)

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - the name aiosmtpd calls
            if receiver.refuse_next:
                return receiver.refuse_next.pop(0)
            receiver.mails.append(
                Mail(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message_from_bytes(envelope.original_content, policy=policy.default),
                    bool(session.authenticated),
                    session.ssl is not None,
                )
            )
            return "250 Message accepted for delivery"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        Handler(),
        hostname=receiver.host,
        port=receiver.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator,
    )
    controller.start()
    yield receiver
    controller.stop()


# --- the mart ---------------------------------------------------------------------------------------------
def deliveries(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT d.*, e.kind, e.dedup_key, e.subject FROM ops.notification_deliveries d"
                " JOIN ops.notification_events e USING (event_id) ORDER BY d.delivery_id"
            )
        ).mappings()
        return [dict(r) for r in rows]
