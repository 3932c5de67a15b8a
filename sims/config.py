"""Settings: every `SIMS_*` environment variable, documented in one place (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """SIMS configuration; each field is read from `SIMS_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SIMS_", extra="ignore")

    data_dir: Path = Field(Path(".sims"), description="Embedded NATS store, outbox, secrets.")
    nats_url: str | None = Field(None, description="Use this NATS; unset: `sims up` starts one embedded.")
    nats_port: int = Field(4222, description="Port of the embedded nats-server (0: a free one).")
    nats_auth: bool = Field(True, description="The embedded server refuses anonymous connections: one NKey per "
                            "role (admin, worker, web) is generated under <data>/nats/ on first start.")
    nats_creds: Path | None = Field(None, description="NKey seed file (or JWT .creds) this process connects with; "
                                    "unset: the role's seed under <data>/nats/ if there is one.")
    pan_london: bool = Field(False, description="This process is one borough of a pan-London deployment "
                             "(deploy/pan-london/): its worker sends the VRU summaries and neighbouring boroughs "
                             "boundary notices, and raises linked incidents from theirs.")
    nats_tls_ca: Path | None = Field(None, description="CA that signed the NATS server's certificate (TLS).")
    nats_tls_cert: Path | None = Field(None, description="Client certificate, when the server verifies clients.")
    nats_tls_key: Path | None = Field(None, description="Key of the client certificate.")
    nats_signers: str | None = Field(None, description="Public NKeys (comma-separated: the web's and the admin's) "
                                     "whose signatures on acknowledgements the worker and `sims audit verify` accept; "
                                     "unset: those of the seeds under <data>/nats/ if any (none: not checked).")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    public_base_url: str | None = Field(None, description="Public base of every link SIMS sends.")
    contacts_dir: Path = ROOT / "contacts"
    protocol: Path = ROOT / "protocols" / "southwark.yaml"
    templates_dir: Path = ROOT / "templates"
    replicas: int = Field(0, description="Stream replicas; 0 picks 3 on a cluster of 3+, else 1.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    command_timeout: float = Field(10.0, description="Seconds a caller waits for a command's result.")
    protective_marking: str = "OFFICIAL-SENSITIVE"

    link_secrets: SecretStr | None = Field(
        None, description="Link signing secrets 'kid:secret,kid:secret' (first signs; others still verify). "
        "Unset: one is generated under the data folder.")
    link_ttl_hours: int = Field(72, ge=1, description="How long a personal link stays valid.")
    sms_rate: float = Field(0, ge=0, description="SMS/WhatsApp messages a second to the provider (0: no limit).")
    email_rate: float = Field(0, ge=0, description="Emails a second to the SMTP server (0: no limit).")
    smtp_connections: int = Field(4, ge=1, le=16, description="Reused SMTP connections.")
    smtp_in_doubt: int = Field(1, ge=1, le=16, description="Emails the SMTP server may have taken before their "
                               "record is written, at once: a worker killed mid-send sends at most this many "
                               "twice. 1 (safe) takes one email per end-of-data answer; more suits a slow relay.")
    retention_days: int = Field(365, ge=0, description="Days after an incident is closed or stood down before "
                                "its personal data (restricted details, recipients' addresses, links, outbox copies) "
                                "is erased by the worker; 0: as soon as its last messages are out.")

    status_reconcile_after: float = Field(600.0, gt=0, description="Seconds after Twilio took an SMS/WhatsApp "
                                          "message before the worker asks Twilio its status, if no status "
                                          "callback has settled it (callbacks lost).")
    status_reconcile_every: float = Field(300.0, gt=0, description="Seconds between two such lookups of one "
                                          "message, and between two passes over the records.")

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base: str | None = Field(None, description="Base URL of the Twilio API (tests: a local server).")
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_tls: Literal["none", "starttls", "tls"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "sims@example.org"
    notify_api_key: SecretStr | None = Field(None, description="GOV.UK Notify API key ('name-serviceid-secret').")
    notify_base_url: str | None = Field(None, description="Base URL of the Notify API (tests: a local server).")
    notify_sms_template_id: str | None = Field(None, description="Notify SMS template whose content is ((body)).")
    notify_email_template_id: str | None = Field(
        None, description="Notify email template: subject ((subject)), content ((body)).")
    notify_callback_token: SecretStr | None = Field(
        None, description="Bearer token Notify sends with delivery receipts (POST /hooks/notify/status).")
    sms_providers: str = Field("", description="SMS suppliers in order, e.g. 'twilio,notify'; the next takes "
                               "over when one fails. Empty: Twilio if configured, else the outbox.")
    email_providers: str = Field("", description="Email suppliers in order, e.g. 'smtp,notify'. Empty: SMTP if "
                                 "configured, else the outbox.")
    failover_failures: int = Field(3, ge=1, description="Transient failures in a row that mark a supplier failing.")
    failover_cool_down: float = Field(30.0, gt=0, description="Seconds a failing supplier rests before a probe "
                                      "(doubles on each failed probe, up to 10 minutes).")

    @property
    def url_file(self) -> Path:
        """Where `sims up` writes the URL of the NATS server it started, for other commands."""
        return self.data_dir / "nats.url"

    def resolved_nats_url(self) -> str | None:
        """SIMS_NATS_URL, else the URL of the embedded server `sims up` is running, else None."""
        if self.nats_url:
            return self.nats_url
        return self.url_file.read_text().strip() if self.url_file.exists() else None

    @property
    def base_url(self) -> str:
        return (self.public_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")
