"""Service configuration from environment variables (12-factor; the k8s ConfigMap sets them).

Every setting is validated at start-up; a bad value stops the service with one line naming the
variable and what it accepts (``ConfigError``), because a half-configured router that starts and
then misroutes is worse than one that refuses to start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KNOWN_TIERS = ("local", "fast", "strong")


class ConfigError(ValueError):
    """Invalid configuration; the message is one line for the operator."""


DEFAULT_PRICES: dict[str, dict[str, float]] = {
    # USD per million tokens. Cache writes with the 5-minute TTL cost 1.25x input, reads 0.1x.
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_write": 1.25, "cache_read": 0.10},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
    # Reaches end of life on 2026-11-30 (the SDK warns); priced so existing deployments keep working.
    "claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30},
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka brokers; unset starts the embedded Tansu broker on loopback"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_client_id: str = "ticket-router"
    consumer_group: str = "ticket-router"
    input_topic: str = "tickets"
    triage_topic: str = "needs-human-triage"
    queue_topic_prefix: str = Field(
        default="",
        description="Prepended to every queue topic (e.g. 'staging.'); queue names stay unprefixed",
    )
    topic_partitions: int = Field(default=6, ge=1, le=10_000)
    topic_replication_factor: int = Field(default=1, ge=1, le=10)
    create_topics: bool = True
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    embedded_broker_port: int = Field(default=9092, ge=1, le=65535)

    # Events
    max_event_bytes: int = Field(default=1_048_576, ge=1_024, description="Larger records go to triage")
    body_char_limit: int = Field(default=8_000, ge=100, description="Body characters shown to a model")

    # Classification
    taxonomy_path: Path | None = None
    tiers: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="Ordered tiers; default fast,strong with an API key, local without"
    )
    low_confidence_action: Literal["triage", "route_flagged"] = "triage"
    local_training_path: Path | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    fast_model: str = "claude-haiku-4-5"
    strong_model: str = "claude-sonnet-4-6"
    model_prices: dict[str, dict[str, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    non_english_to_strong: bool = True
    llm_max_tokens: int = Field(default=600, ge=64)
    llm_timeout_s: float = Field(default=15.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1, le=20)
    llm_backoff_initial_s: float = Field(default=0.5, gt=0)
    llm_backoff_max_s: float = Field(default=8.0, gt=0)
    ticket_deadline_s: float = Field(default=20.0, gt=0)
    prompt_cache_ttl: Literal["5m", "1h"] = "5m"

    # Concurrency and shutdown
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    commit_interval_ms: int = Field(default=500, ge=10)
    drain_timeout_s: float = Field(default=25.0, gt=0)
    dedup_window: int = Field(default=100_000, ge=0)

    # Observability
    metrics_port: int = Field(default=9000, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_ticket_text: bool = False
    lag_refresh_s: float = Field(default=5.0, gt=0)

    @field_validator("tiers", mode="before")
    @classmethod
    def _split_tiers(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tiers")
    @classmethod
    def _known_tiers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(f"must name at least one tier (allowed: {', '.join(KNOWN_TIERS)})")
        for tier in value:
            if tier not in KNOWN_TIERS:
                raise ValueError(f"unknown tier {tier!r} (allowed: {', '.join(KNOWN_TIERS)})")
        if len(set(value)) != len(value):
            raise ValueError("a tier is listed twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "KAFKA_SECURITY_PROTOCOL=SASL_* needs KAFKA_SASL_MECHANISM (PLAIN, SCRAM-SHA-256, "
                "SCRAM-SHA-512), KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if self.ticket_deadline_s > self.drain_timeout_s:
            # A ticket still classifying when SIGTERM's drain ends is cancelled and redelivered, i.e.
            # classified and paid for twice; the deadline must fit inside the drain.
            raise ValueError(
                f"TICKET_DEADLINE_S ({self.ticket_deadline_s:g}) must not exceed DRAIN_TIMEOUT_S "
                f"({self.drain_timeout_s:g}): in-flight tickets must be able to finish during a drain"
            )
        needs_key = [t for t in self.effective_tiers if t != "local"]
        if needs_key and self.anthropic_api_key is None:
            raise ValueError(
                f"TIERS={','.join(self.effective_tiers)} needs ANTHROPIC_API_KEY (or use TIERS=local)"
            )
        for tier, model in (("fast", self.fast_model), ("strong", self.strong_model)):
            if tier in needs_key and model not in self.model_prices:
                raise ValueError(
                    f"MODEL_PRICES has no price for {model!r} (priced: {', '.join(self.model_prices)})"
                )
        return self

    @property
    def effective_tiers(self) -> list[str]:
        if self.tiers is not None:
            return self.tiers
        return ["fast", "strong"] if self.anthropic_api_key is not None else ["local"]

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers


def _format_settings_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = "_".join(str(p) for p in err["loc"]).upper()
    message = err["msg"].removeprefix("Value error, ")
    return f"{key}: {message}" if key else message


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and explicit overrides, for tests and tools)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_format_settings_error(exc)) from None
