"""The script a fake Messages API follows: which labels, confidences, delays and failures it serves.

Everything a test or benchmark wants to control lives in one validated document so that a run can
be reproduced from a file (``--scenario``) or swapped mid-run over ``PUT /_control/scenario``
without restarting the server. What a model *is* (its cache minimum, tokenizer, thinking and effort
rules, retirement date) is not scripted here: it comes from ``consumer.classify.models.MODELS``, the
one table the router reads too.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from consumer.classify.models import MODELS, facts_for

# ``529_mid_stream``: a streamed reply starts, then an overloaded ``error`` event ends it (a plain 529
# when the request does not stream, as the real API answers an overload it hits before replying).
FaultKind = Literal["429", "spend_limit", "529", "500", "drop", "timeout", "529_mid_stream"]
MalformedKind = Literal[
    "not_json", "missing_field", "label_outside_enum", "confidence_out_of_range", "wrong_type"
]
ScriptStep = Literal[
    "ok",
    "429",
    "spend_limit",
    "529",
    "500",
    "drop",
    "timeout",
    "529_mid_stream",
    "not_json",
    "missing_field",
    "label_outside_enum",
    "confidence_out_of_range",
    "wrong_type",
    "refusal",
]
REFUSAL: ScriptStep = "refusal"

FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
MALFORMED_KINDS: frozenset[str] = frozenset(get_args(MalformedKind))


def is_fault(step: str) -> TypeGuard[FaultKind]:
    return step in FAULT_KINDS


def is_malformed(step: str) -> TypeGuard[MalformedKind]:
    return step in MALFORMED_KINDS


# Every model of the table that has no retirement date. A model with one is left out even before
# that day, so the default scenario does not change (and tests do not start failing) on the date.
DEFAULT_MODELS: tuple[str, ...] = tuple(
    model_id for model_id, facts in MODELS.items() if facts.lifecycle.retires_on is None
)

# Minimum cacheable prompt length for a scripted model the table does not know; known models use the
# table's (``Scenario.min_cacheable_tokens``), and ``ModelScript.min_cacheable_tokens`` overrides both.
FALLBACK_MIN_CACHEABLE_TOKENS = 1024


class _Strict(BaseModel):
    """Rejects unknown keys so a typo in a scenario file fails loudly instead of being ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FixedLabel(_Strict):
    """Always the same label: the simplest way to force a routing decision in a test."""

    mode: Literal["fixed"] = "fixed"
    label: str


class TicketIdLabels(_Strict):
    """Labels looked up by the ``ticket_id:`` line, for tests that know their tickets by id."""

    mode: Literal["ticket_id"] = "ticket_id"
    labels: dict[str, str]
    default: str | None = Field(default=None, description="Label for unknown ids; None means hash.")


class KeywordRule(_Strict):
    contains: str = Field(min_length=1)
    label: str


class KeywordLabels(_Strict):
    """A crude, readable classifier: first case-insensitive substring match wins."""

    mode: Literal["keywords"] = "keywords"
    rules: list[KeywordRule]
    default: str | None = Field(default=None, description="Label when nothing matches; None means hash.")


class HashLabels(_Strict):
    """A stable pseudo-random label, so unscripted axes still vary across tickets but not across retries."""

    mode: Literal["hash"] = "hash"


LabelRule = Annotated[FixedLabel | TicketIdLabels | KeywordLabels | HashLabels, Field(discriminator="mode")]


class Latency(_Strict):
    """Service time added before answering; lognormal gives the long tail real APIs have."""

    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    mean_ms: float = Field(default=0.0, ge=0)
    spread_ms: float = Field(default=0.0, ge=0)


def _check_rates(rates: Collection[float], what: str) -> None:
    if any(rate < 0 or rate > 1 for rate in rates):
        raise ValueError(f"{what} must each be within 0..1")
    if sum(rates) > 1 + 1e-9:
        raise ValueError(f"{what} must sum to at most 1")


class ModelScript(_Strict):
    """How one model behaves. Defaults give fast, valid, confident answers."""

    labels: dict[str, LabelRule] = Field(default_factory=dict)
    confidence: float = Field(default=0.9, ge=0, le=1)
    axis_confidence: dict[str, float] = Field(default_factory=dict)
    low_confidence_rate: float = Field(default=0.0, ge=0, le=1)
    low_confidence_value: float = Field(default=0.4, ge=0, le=1)
    low_confidence_axis: str | None = Field(default=None, description="None: a hash of the ticket picks it.")
    latency: Latency = Field(default_factory=Latency)
    fault_rates: dict[FaultKind, float] = Field(default_factory=dict)
    malformed_rates: dict[MalformedKind, float] = Field(default_factory=dict)
    script: list[ScriptStep] = Field(default_factory=list, description="Consumed one per request, FIFO.")
    retry_after_s: int = Field(default=1, ge=0)
    timeout_sleep_s: float = Field(default=30.0, ge=0)
    stream_delay_ms: float = Field(
        default=0.0, ge=0, description="Pause before each streamed delta, so clients see text arrive."
    )
    min_cacheable_tokens: int | None = Field(default=None, ge=0, description="None: the table's minimum.")
    refusal_rate: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A stable fraction of tickets (by text) answered with stop_reason refusal.",
    )

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> ModelScript:
        _check_rates(self.fault_rates.values(), "fault_rates")
        _check_rates(self.malformed_rates.values(), "malformed_rates")
        return self


def _default_models() -> dict[str, ModelScript]:
    return {name: ModelScript() for name in DEFAULT_MODELS}


class BatchScript(_Strict):
    """How the Message Batches endpoints behave: how long a batch takes, which requests fail.

    A request inside a batch is answered like one sent to ``/v1/messages`` (same checks, same
    answers and usage); on top of that a seeded fraction ``error_rate`` ends ``errored`` (an
    ``api_error``) and ``expire_rate`` ends ``expired``. A batch whose ``processing_delay_s`` is
    longer than ``expires_after_s`` expires whole, as a real one does after 24 hours.
    """

    processing_delay_s: float = Field(default=0.0, ge=0, description="From creation until the batch ends.")
    error_rate: float = Field(default=0.0, ge=0, le=1)
    expire_rate: float = Field(default=0.0, ge=0, le=1)
    expires_after_s: float = Field(default=24 * 3600.0, gt=0)
    max_requests: int = Field(default=100_000, ge=1, description="The API's limit per batch.")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="The API's body limit per batch.")

    @model_validator(mode="after")
    def _rates_are_probabilities(self) -> BatchScript:
        _check_rates((self.error_rate, self.expire_rate), "error_rate and expire_rate")
        return self


class Scenario(_Strict):
    """The whole script. ``models`` keys are matched by prefix so dated model ids resolve too."""

    seed: int = 0
    models: dict[str, ModelScript] = Field(default_factory=_default_models)
    api_key: str | None = Field(default=None, description="If set, only this key is accepted.")
    ticket_pattern: str | None = Field(
        default=None, description="Regex whose first group is the ticket text; None uses all user text."
    )
    max_recorded_requests: int = Field(default=10_000, ge=0)
    batches: BatchScript = Field(default_factory=BatchScript)

    def resolve_model(self, model: str) -> str | None:
        """The configured name ``model`` refers to, so ``claude-haiku-4-5-20251001`` finds its script."""
        return match_prefix(model, self.models)

    def script_for(self, model: str) -> ModelScript | None:
        name = self.resolve_model(model)
        return None if name is None else self.models[name]

    def min_cacheable_tokens(self, model: str) -> int:
        script = self.script_for(model)
        if script is not None and script.min_cacheable_tokens is not None:
            return script.min_cacheable_tokens
        facts = facts_for(model)
        return FALLBACK_MIN_CACHEABLE_TOKENS if facts is None else facts.min_cacheable_tokens


def match_prefix(model: str, names: dict[str, Any]) -> str | None:
    """Longest key equal to ``model`` or a ``-``-separated prefix of it (``claude-haiku-4-5`` ⊂ dated id)."""
    candidates = [name for name in names if model == name or model.startswith(name + "-")]
    return max(candidates, key=len) if candidates else None


def parse_scenario(data: Any) -> Scenario:
    """Validates an already-decoded document (``None`` means all defaults, as for an empty YAML file)."""
    return Scenario.model_validate(data if data is not None else {})


def load_scenario(path: Path | str) -> Scenario:
    """Reads JSON or YAML (chosen by suffix; YAML is a superset so it is the fallback)."""
    file = Path(path)
    text = file.read_text(encoding="utf-8")
    data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    return parse_scenario(data)
