"""Service configuration from environment variables (12-factor; the k8s ConfigMap sets them).

Every setting is validated at start-up; a bad value stops the service with one line naming the
variable and what it accepts (``ConfigError``), because a half-configured router that starts and
then misroutes is worse than one that refuses to start.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    SkipValidation,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from consumer.api.auth import parse_credentials
from consumer.api.mapping import WebhookMapping, load_mappings, parse_mappings, parse_path
from consumer.api.webhooks import INTERCOM_TIER_PATH, ZENDESK_TIER_PATH
from consumer.classify.models import (
    Effort,
    TierRequest,
    default_prices,
    facts_for,
    legacy_warning,
    resolve_tier_request,
    retirement_error,
    thinking_room_warning,
)
from consumer.classify.redact import DEFAULT_PHONE_REGIONS, RedactionPolicy, parse_kinds, parse_regions
from consumer.classify.redact import KINDS as REDACT_KINDS
from consumer.console.passwords import PasswordFormatError, parse_users
from schemas.corrections import DEFAULT_CORRECTIONS_TOPIC
from schemas.drafts import DEFAULT_DRAFTS_TOPIC

KNOWN_TIERS = ("local", "fast", "strong")


class ConfigError(ValueError):
    """Invalid configuration; the message is one line for the operator."""


# USD per million tokens for every priced model of the model table (consumer.classify.models);
# MODEL_PRICES adds rows for other model ids or replaces rows of these.
DEFAULT_PRICES: dict[str, dict[str, float]] = default_prices()
ThinkingSetting = Literal["adaptive", "disabled", "between_tools"]


def utc_today() -> date:
    return datetime.now(UTC).date()


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
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest",
        description="where a group without committed offsets starts; latest skips what is already there",
    )
    input_topic: str = "tickets"
    triage_topic: str = "needs-human-triage"
    corrections_topic: str = Field(
        default=DEFAULT_CORRECTIONS_TOPIC, min_length=1, description="Where corrections go and are read"
    )
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
    dense_encoder: Literal["none", "wordllama", "minilm", "e5"] = Field(
        default="wordllama",
        description="Sentence vectors beside the n-grams (local tier and example store); none: n-grams only",
    )
    local_model_cache: Path | None = Field(
        default=None, description="Directory where fitted local models are kept between starts; unset: refit"
    )
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    fast_model: str = "claude-haiku-5-5"
    strong_model: str = "claude-sonnet-5-5"
    fast_thinking: ThinkingSetting | None = Field(default=None, description="unset: the model's cheapest")
    fast_effort: Effort | None = None
    fast_max_tokens: int | None = Field(default=None, ge=64)
    strong_thinking: ThinkingSetting | None = None
    strong_effort: Effort | None = None
    strong_max_tokens: int | None = Field(default=None, ge=64)
    model_prices: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Extra or replacement price rows, USD per million tokens"
    )
    non_english_to_strong: bool = True
    llm_max_tokens: int = Field(
        default=600, ge=64, description="Tokens for the answer; thinking gets its own room on top"
    )
    prompt_examples: int = Field(
        default=12, ge=0, le=500, description="Labeled examples in the cached system prompt (at least)"
    )
    retrieved_examples: int = Field(
        default=5, ge=0, le=20, description="Most similar labeled examples put before each ticket; 0: off"
    )
    # One per label by default: five near-copies of one label show the model one candidate, five
    # labels show it five (label recall@5 on BANKING77 96.3% -> 98.2%, README "Label recall@k").
    retrieved_per_label: int = Field(
        default=1,
        ge=0,
        le=20,
        description="At most this many retrieved examples with the same labels on every axis; 0: no limit",
    )
    learn_from_corrections: bool = Field(
        default=True, description="Read CORRECTIONS_TOPIC: the example store and the local tier learn from it"
    )
    retrain_after: int = Field(
        default=50, ge=0, description="New corrected labels before the local tier is refitted; 0: never"
    )
    recent_decisions: int = Field(
        default=20_000,
        ge=0,
        le=1_000_000,
        description="Routed tickets remembered (text, labels) so a correction without text can be learned",
    )
    retrieval_min_similarity: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Retrieved examples less similar than this are left out"
    )
    llm_timeout_s: float = Field(default=15.0, gt=0)
    llm_max_attempts: int = Field(default=4, ge=1, le=20)
    llm_backoff_initial_s: float = Field(default=0.5, gt=0)
    llm_backoff_max_s: float = Field(default=8.0, gt=0)
    ticket_deadline_s: float = Field(default=20.0, gt=0)
    prompt_cache_ttl: Literal["5m", "1h"] = "5m"

    # What a model may see, and what it may cost (consumer/classify/redact.py, budget.py)
    redact: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(REDACT_KINDS),
        description="Kinds replaced by placeholders in text sent to Claude: "
        "email,phone,card,iban,ip,secret, all, or none",
    )
    redact_phone_regions: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_PHONE_REGIONS,
        description="Regions whose national phone formats are recognised (+-prefixed numbers always are)",
    )
    llm_budget_usd_per_hour: float | None = Field(
        default=None, gt=0, description="Claude spend per clock hour (UTC) before the Claude tiers pause"
    )
    llm_budget_usd_per_day: float | None = Field(
        default=None, gt=0, description="Claude spend per UTC day before the Claude tiers pause"
    )
    llm_budget_replicas: int = Field(
        default=1, ge=1, le=1_000, description="Routers sharing the budgets; each enforces 1/N of them"
    )

    # Concurrency and shutdown
    max_in_flight: int = Field(default=64, ge=1, le=10_000)
    commit_interval_ms: int = Field(default=500, ge=10)
    drain_timeout_s: float = Field(default=25.0, gt=0)
    dedup_window: int = Field(
        default=100_000,
        ge=0,
        le=10_000_000,
        description="Recent event ids remembered; the window is allocated at start-up (about 26 bytes an id)",
    )

    # Observability
    metrics_port: int = Field(default=9000, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="case-insensitive"
    )
    log_ticket_text: bool = False
    lag_refresh_s: float = Field(default=5.0, gt=0)

    # HTTP ingestion API (consumer/api/ingest.py): its own port, off unless API_PORT is set
    api_port: int | None = Field(default=None, ge=0, le=65535, description="unset: no API; 0: any free port")
    api_host: str = Field(default="127.0.0.1", description="0.0.0.0 to serve every interface")
    api_tokens: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description="client:token pairs, comma-separated (Authorization: Bearer)"
    )
    api_hmac_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description="client:secret pairs, comma-separated (X-Signature)"
    )
    api_max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=67_108_864)
    api_max_batch: int = Field(default=100, ge=1, le=10_000)
    api_rate_per_s: float = Field(default=50.0, gt=0)
    api_rate_burst: int = Field(default=100, ge=1)
    # The help desks' own webhook signatures, each accepted on its own route only
    api_zendesk_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description="client:webhook signing secret pairs (X-Zendesk-Webhook-Signature)"
    )
    api_intercom_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict, description="client:app client secret pairs (X-Hub-Signature)"
    )
    api_zendesk_tier_path: Annotated[tuple[str | int, ...], NoDecode] = ZENDESK_TIER_PATH
    api_intercom_tier_path: Annotated[tuple[str | int, ...], NoDecode] = INTERCOM_TIER_PATH
    # Read and checked once here, so a bad mapping stops the start-up (skipped by pydantic: the
    # validator below builds the checked objects itself).
    api_webhook_mappings: Annotated[dict[str, WebhookMapping], NoDecode, SkipValidation] = Field(
        default_factory=dict, description="YAML file of named JSON webhook mappings (/v1/webhooks/<name>)"
    )

    # The triage console (consumer/console/): /console/ on API_PORT, on when a way to sign in is set
    console_users: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="name:hash pairs, comma-separated (hash: ticket-tools console-user NAME)",
    )
    console_trusted_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header a reverse proxy sets to the signed-in user's name; unset: not trusted",
    )
    console_session_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="Signs session cookies; the same on every replica; unset: random per process",
    )
    console_session_ttl_s: int = Field(default=28_800, ge=60, le=2_592_000, description="Sign-in lifetime")
    console_cookie_secure: bool = Field(
        default=True, description="Session cookie only over HTTPS; false for plain-HTTP local runs"
    )
    console_decisions_topic: str = Field(
        default="triage-decisions", min_length=1, description="Compacted topic of console decisions"
    )
    console_inbox_size: int = Field(
        default=10_000, ge=10, le=1_000_000, description="Records the inbox keeps in memory (oldest go)"
    )

    # Drafted replies (ticket-router draft, consumer/draft/): reads the queue topics in its own group
    drafts_topic: str = Field(
        default=DEFAULT_DRAFTS_TOPIC, min_length=1, description="Where DraftReply events go"
    )
    draft_consumer_group: str | None = Field(
        default=None, description="unset: CONSUMER_GROUP with '.drafter' appended"
    )
    draft_tier: Literal["fast", "strong"] = Field(
        default="strong", description="The model (FAST_MODEL or STRONG_MODEL) of handlers that name no tier"
    )
    draft_max_tokens: int = Field(
        default=1_024, ge=64, le=16_000, description="Tokens for a reply of a handler without max_tokens"
    )
    draft_deadline_s: float = Field(
        default=20.0, gt=0, description="Time for one draft, retries included; at most DRAIN_TIMEOUT_S"
    )
    draft_max_in_flight: int = Field(default=16, ge=1, le=10_000, description="Drafts written at once")
    draft_metrics_port: int = Field(
        default=9001,
        ge=0,
        le=65535,
        description="The drafter's /metrics, /healthz, /readyz (on METRICS_HOST)",
    )

    @property
    def drafter_group(self) -> str:
        """The drafter's consumer group: its own offsets on the queue topics, apart from team consumers."""
        return self.draft_consumer_group or f"{self.consumer_group}.drafter"

    @field_validator(
        "api_tokens", "api_hmac_secrets", "api_zendesk_secrets", "api_intercom_secrets", mode="before"
    )
    @classmethod
    def _credential_pairs(cls, value: object, info: ValidationInfo) -> object:
        """``client:credential,…`` to a mapping; messages name the entry, never the credential."""
        if isinstance(value, str):
            return parse_credentials(value, "token" if info.field_name == "api_tokens" else "secret")
        return value

    @field_validator("console_users", mode="before")
    @classmethod
    def _console_users(cls, value: object) -> object:
        """``name:hash,…`` to a mapping, every hash checked (messages never quote a hash)."""
        if isinstance(value, str):
            try:
                return parse_users(value)
            except PasswordFormatError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("redact", mode="before")
    @classmethod
    def _redact_kinds(cls, value: object) -> object:
        """``email,phone`` / ``all`` / ``none`` to the set of kinds (unknown names name the allowed)."""
        return parse_kinds(value) if isinstance(value, str) else value

    @field_validator("redact_phone_regions", mode="before")
    @classmethod
    def _phone_regions(cls, value: object) -> object:
        return parse_regions(value) if isinstance(value, str) else value

    @property
    def redaction_policy(self) -> RedactionPolicy:
        """What is replaced by placeholders before any text reaches a model."""
        return RedactionPolicy(kinds=frozenset(self.redact), phone_regions=tuple(self.redact_phone_regions))

    @field_validator("api_zendesk_tier_path", "api_intercom_tier_path", mode="before")
    @classmethod
    def _json_path(cls, value: object) -> object:
        """``ticket.organization.plan`` (dotted, ``[n]`` for list items) to the steps to walk."""
        return parse_path(value) if isinstance(value, str) else value

    @field_validator("api_webhook_mappings", mode="before")
    @classmethod
    def _webhook_mappings(cls, value: object) -> object:
        """A path to the mappings file (empty: none), or the document itself (tests, tools)."""
        if isinstance(value, str | Path):
            return load_mappings(Path(value)) if str(value).strip() else {}
        if isinstance(value, Mapping) and all(isinstance(m, WebhookMapping) for m in value.values()):
            return value  # checked already (a copy of settings)
        return parse_mappings(value)

    @field_validator("log_level", "kafka_security_protocol", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        """Level and protocol names are conventionally upper case; ``debug`` means the same thing."""
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator(
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "taxonomy_path",
        "local_training_path",
        "local_model_cache",
        mode="before",
    )
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        """``LOCAL_MODEL_CACHE=`` means unset, not the working directory (``Path("")`` is ".")."""
        return None if isinstance(value, str) and not value.strip() else value

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
        if self.api_port is not None and not (self.api_tokens or self.api_hmac_secrets):
            raise ValueError(
                "API_PORT is set but neither API_TOKENS nor API_HMAC_SECRETS is: every request to the "
                "API must be authenticated (client:token or client:secret pairs)"
            )
        if self.console_enabled and self.api_port is None:
            raise ValueError(
                "CONSOLE_USERS or CONSOLE_TRUSTED_HEADER is set but API_PORT is not: the console is "
                "served on the API's port"
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
        for setting, model in self.model_settings():
            retired = retirement_error(setting, model, utc_today())
            if retired is not None:
                raise ValueError(retired)
        for tier in ("fast", "strong"):
            self.tier_request(tier)  # raises ModelSettingError (a ValueError) naming the setting
            model = self.model_for(tier)
            if tier in needs_key and price_key(model, self.prices) is None:
                raise ValueError(
                    f"MODEL_PRICES has no price for {model!r} (priced: {', '.join(self.prices)})"
                )
        return self

    def model_settings(self) -> list[tuple[str, str]]:
        return [("FAST_MODEL", self.fast_model), ("STRONG_MODEL", self.strong_model)]

    def model_for(self, tier: str) -> str:
        return self.fast_model if tier == "fast" else self.strong_model

    def tier_request(self, tier: str) -> TierRequest:
        """The thinking, effort and max_tokens the fast or strong tier sends (validated per model)."""
        if tier == "fast":
            thinking, effort, max_tokens = self.fast_thinking, self.fast_effort, self.fast_max_tokens
        else:
            thinking, effort, max_tokens = self.strong_thinking, self.strong_effort, self.strong_max_tokens
        return resolve_tier_request(
            tier.upper(), self.model_for(tier), thinking, effort, max_tokens, self.llm_max_tokens
        )

    @property
    def prices(self) -> dict[str, dict[str, float]]:
        """The model table's prices with MODEL_PRICES rows added or replacing them."""
        return {**DEFAULT_PRICES, **self.model_prices}

    def model_warnings(self, today: date | None = None) -> list[str]:
        """Start-up warnings: legacy models (with their dates), and a tier cap too small for thinking."""
        day = today or utc_today()
        warnings = [legacy_warning(setting, model, day) for setting, model in self.model_settings()]
        for tier in (name for name in self.effective_tiers if name in ("fast", "strong")):
            request = self.tier_request(tier)
            warnings.append(
                thinking_room_warning(tier.upper(), self.model_for(tier), request, self.llm_max_tokens)
            )
        return [warning for warning in warnings if warning is not None]

    @property
    def effective_tiers(self) -> list[str]:
        if self.tiers is not None:
            return self.tiers
        return ["fast", "strong"] if self.anthropic_api_key is not None else ["local"]

    @property
    def console_enabled(self) -> bool:
        """The console is served when a way to sign in to it is configured."""
        return bool(self.console_users) or self.console_trusted_header is not None

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers


class _GivenSettings(Settings):
    """Settings built from the values given only: the environment and ``.env`` are not read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def settings_from_values(values: Mapping[str, object]) -> Settings:
    """``Settings`` from these values and defaults, with every field's and the model's own checks.

    For programs that use a few settings (the Kafka tools): they read just those variables, so a
    setting only the service uses cannot stop them, and still validate them exactly as the
    service does. Raises pydantic's ValidationError, whose location names the field.
    """
    return _GivenSettings(**values)  # type: ignore[arg-type]


def price_key(model: str, prices: Mapping[str, object]) -> str | None:
    """The MODEL_PRICES row that prices ``model``: its own id, else the id it is a dated form of."""
    if model in prices:
        return model
    facts = facts_for(model)
    if facts is not None and facts.model_id in prices:
        return facts.model_id
    candidates = [name for name in prices if model.startswith(name + "-")]
    return max(candidates, key=len) if candidates else None


_SOURCE_ERROR = re.compile(r'field "(?P<field>\w+)"')


def _format_source_error(exc: SettingsError) -> str:
    """pydantic-settings' own error for a value it could not decode (a JSON setting), as one line.

    Its message names the field but not the variable or what was expected, and its traceback is
    what an operator used to see.
    """
    match = _SOURCE_ERROR.search(str(exc))
    if match is None:
        return f"a setting could not be read: {exc}"
    field = match.group("field")
    info = Settings.model_fields.get(field)
    expected = "a JSON object" if info is not None and "dict" in str(info.annotation) else "valid JSON"
    return f"{field.upper()}: the value is not {expected}"


def format_settings_error(exc: ValidationError, show_value: bool = False) -> str:
    """``VARIABLE: reason`` for the first problem (pydantic lists the allowed values of a Literal).

    ``show_value`` appends the value that was given, never for a password.
    """
    err = exc.errors()[0]
    key = "_".join(str(p) for p in err["loc"]).upper()
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    secret = any(word in key for word in ("PASSWORD", "TOKENS", "SECRETS"))
    if show_value and key and isinstance(value, str) and not secret:
        message += f" (got {value!r})"
    return f"{key}: {message}" if key else message


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and explicit overrides, for tests and tools)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(format_settings_error(exc)) from None
    except SettingsError as exc:
        raise ConfigError(_format_source_error(exc)) from None
