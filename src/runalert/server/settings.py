"""The server's settings: ``RUNALERT_*`` environment variables (and ``runalert serve`` options)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServerSettings"]


class ServerSettings(BaseSettings):
    """Everything the server reads from the environment. Each field is ``RUNALERT_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RUNALERT_", extra="ignore", validate_default=True)

    home: Path = Field(Path("~/.runalert"), description="Where the SQLite database and the secret key file live.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default sqlite:///$RUNALERT_HOME/runalert.db. PostgreSQL: postgresql+psycopg://…",
    )
    secret_key: SecretStr | None = Field(
        None, description="Fernet key for secrets at rest; default: a 0600 key file in RUNALERT_HOME (made once)."
    )
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)
    insecure: bool = Field(False, description="Allow a non-loopback bind with no API keys (not recommended).")
    public_url: str | None = Field(None, description="The server's address as users see it (for ${run_url}).")

    heartbeat_timeout: float = Field(300.0, gt=0, description="Seconds of silence before a run is FAILED.")
    heartbeat_check_interval: float = Field(5.0, gt=0, description="How often silent runs are looked for.")
    group_check_interval: float = Field(
        5.0, gt=0, description="How often finished groups (OnGroupFinished) and due digests (OnSchedule) are checked."
    )
    clock_offset: float = Field(
        0.0, description="Seconds added to the clock of groups and digests (to try a schedule without waiting for it)."
    )
    max_age: float = Field(86400.0, gt=0, description="Seconds after which an undelivered alert is dead-lettered.")
    retry_initial: float = Field(1.0, gt=0, description="First delivery retry after this many seconds.")
    retry_max: float = Field(300.0, gt=0, description="Longest wait between two delivery attempts.")
    lease_seconds: float = Field(
        60.0, gt=0, description="A claimed delivery not finished within this time is claimed again (crash recovery)."
    )
    dispatch_interval: float = Field(1.0, gt=0, description="Poll interval of the dispatcher when idle.")
    dispatcher_threads: int = Field(4, ge=1, le=64)
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes `runalert serve` starts on its port (PostgreSQL only: SQLite serves one).",
    )
    background: bool = Field(True, description="Run the dispatcher and the heartbeat monitor in this process.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body in bytes; a larger one is answered 413."
    )
    max_batch_points: int = Field(
        100_000, ge=1, description="Most metric points (values) in one metric batch; more is answered 413."
    )
    metrics_token: SecretStr | None = Field(
        None, description="A token for GET /metrics (Bearer), besides any project's API key; none: API keys only."
    )
    header_timeout: float = Field(
        30.0, gt=0, description="Seconds a client has to send a request's headers (slow senders are cut off, 408)."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=4096, description="Largest request line and headers in bytes; more is answered 431."
    )

    delivery_timeout: float = Field(
        10.0, gt=0, le=300, description="Total seconds of one delivery attempt: connect, send and the whole answer."
    )
    dispatcher_project_threads: int | None = Field(
        None,
        ge=1,
        description="Most delivery workers one project's deliveries may hold at once (default: half of "
        "dispatcher_threads, at least 1); an integration holds at most one.",
    )
    allow_private_destinations: bool = Field(
        False,
        description="Let integrations deliver to private, loopback, link-local and cloud-metadata addresses "
        "(a lab's internal webhook). Off: refused once API keys exist; loopback allowed while there are none.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'runalert.db'}"
