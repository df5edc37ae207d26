"""Settings: one frozen dataclass, read once at start-up.

Sources, later ones winning: defaults, ``instance/config.toml``, ``PROTECT_*``
environment variables, then the overrides given to ``create_app`` (tests).
"""
from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = ("development", "production", "test")
LOG_FORMATS = ("text", "json")


class SettingsError(RuntimeError):
    """A setting that stops start-up, with a message an operator can act on."""


@dataclass(frozen=True)
class Settings:
    env: str = "development"
    debug: bool = False
    instance_path: str = str(ROOT / "instance")
    secret_key: str = ""
    database_url: str = ""
    public_url: str = "http://127.0.0.1:5000"
    default_locale: str = "es"
    # Idle timeouts in minutes; staff handle many cases, so theirs is shorter.
    staff_idle_minutes: int = 30
    idle_minutes: int = 120
    ratelimit_storage_url: str = "memory://"
    login_limit_per_account: str = "9 per minute"
    login_limit_per_address: str = "30 per minute"
    # Argon2id cost (see bench/RESULTS.md for the time it costs here).
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 49152
    argon2_parallelism: int = 2
    master_keys: str = ""
    blob_url: str = ""
    s3_endpoint_url: str = ""
    max_upload_mb: int = 100
    # Outgoing e-mail: "host:port" (port 25 when left out); empty sends none (in-app notices only).
    mail_server: str = ""
    mail_from: str = "protect@localhost"
    # Login for the mail server (only sent after STARTTLS when that is on).
    mail_username: str = ""
    mail_password: str = ""
    # Upgrade the connection with STARTTLS (certificate checked); off only for a local relay.
    mail_starttls: bool = True
    # Seconds to wait on the mail server per connection and command.
    mail_timeout_seconds: int = 30
    # Tries per e-mail (backoff 1, 2, 4 ... min, at most 1 h apart) before it is marked failed.
    mail_max_attempts: int = 24
    # Overdue clocks go to the supervisors this long after they became overdue.
    escalate_after_minutes: int = 60
    # The web process sweeps on a thread this often (0: off; run `flask protect sweep` from a timer).
    sweep_interval_seconds: int = 60
    # PostgreSQL: connections one large sweep notifies on at once, batch by batch (SQLite: one).
    sweep_workers: int = 2
    # Donor reports: a figure resting on fewer cases than this shows "< k" (reports/suppression.py).
    report_min_cell: int = 5
    # A report's kept figures (reports/models.py) are shown this long though new data arrived (the
    # report says "as of" when); the sweeper makes them again every report_refresh_seconds at most.
    report_max_age_seconds: int = 900
    report_refresh_seconds: int = 300
    # Log lines as "text" (for people) or "json" (one object a line, for collectors; production).
    log_format: str = "text"
    # Reverse proxies in front of the app (nginx: 1); their X-Forwarded-For/-Proto are trusted that deep.
    proxy_hops: int = 0
    testing: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def instance(self) -> Path:
        return Path(self.instance_path)


def _coerce(kind: Any, raw: Any, name: str) -> Any:
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    if not isinstance(raw, str):
        return raw
    if kind == "bool":
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"PROTECT_{name.upper()} must be true or false, not {raw!r}")
    if kind == "int":
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"PROTECT_{name.upper()} must be a whole number, not {raw!r}") from None
    return raw


def _private_file(path: Path, make: Callable[[], str]) -> str:
    """Read a secret file, creating it with mode 0600 when absent."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
    return path.read_text().strip()


def load_settings(overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    known = {f.name: f for f in fields(Settings)}
    values: dict[str, Any] = {}

    instance = Path(overrides.get("instance_path")
                    or environ.get("PROTECT_INSTANCE_PATH")
                    or Settings.instance_path)
    config_file = instance / "config.toml"
    if config_file.exists():
        try:
            with config_file.open("rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_file} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key not in known:
                raise SettingsError(f"{config_file}: unknown setting {key!r}")
            values[key] = value
    for name in known:
        env_value = environ.get(f"PROTECT_{name.upper()}")
        if env_value is not None:
            values[name] = env_value
    values.update(overrides)
    values["instance_path"] = str(instance)
    unknown = set(values) - set(known)
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    values = {k: _coerce(known[k].type, v, k) for k, v in values.items()}

    settings = Settings(**values)
    if settings.env not in ENVIRONMENTS:
        raise SettingsError(f"PROTECT_ENV must be one of {', '.join(ENVIRONMENTS)}")
    if settings.log_format not in LOG_FORMATS:
        raise SettingsError(f"PROTECT_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    instance.mkdir(parents=True, exist_ok=True)
    if settings.production:
        _check_production(settings)
    if not settings.secret_key:
        secret = _private_file(instance / "secret_key", lambda: secrets.token_urlsafe(48))
        settings = dataclasses.replace(settings, secret_key=secret)
    if not settings.database_url:
        settings = dataclasses.replace(
            settings, database_url=f"sqlite:///{instance / 'protect.db'}")
    if not settings.blob_url:
        settings = dataclasses.replace(settings, blob_url=str(instance / "blobs"))
    return settings


def _check_production(settings: Settings) -> None:
    problems = []
    if len(settings.secret_key) < 32:
        problems.append("PROTECT_SECRET_KEY is missing or shorter than 32 characters")
    if settings.debug:
        problems.append("PROTECT_DEBUG must be off in production")
    if not settings.public_url.startswith("https://"):
        problems.append("PROTECT_PUBLIC_URL must be an https:// address in production")
    if problems:
        raise SettingsError("refusing to start in production: " + "; ".join(problems))
