"""The taxonomy file: axes, labels, thresholds, routing rules and business rules.

It is the single source of truth for the prompt, the model's output schema, the local tier's
labels, the routing and the topics created at start-up, so every cross-reference in it is checked
when it is loaded: a typo fails the start-up with one line naming the key and what is allowed,
instead of silently routing tickets to a topic nobody reads.
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DEFAULT_TAXONOMY_RESOURCE = "taxonomy.yaml"


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message is one line meant for the operator."""


class Axis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    threshold: float = Field(default=0.75, ge=0.0, le=1.0)
    labels: dict[str, str] = Field(min_length=2)

    @field_validator("labels")
    @classmethod
    def _labels_are_identifiers(cls, labels: dict[str, str]) -> dict[str, str]:
        for label in labels:
            if not LABEL_PATTERN.match(label):
                raise ValueError(
                    f"label {label!r} must be lower-case letters, digits, '_', '.' or '-' "
                    "(it becomes part of topic names and metric labels)"
                )
        return labels


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    when: dict[str, str | list[str]] = Field(default_factory=dict)
    queue: str = Field(min_length=1)

    def labels_for(self, axis: str) -> frozenset[str] | None:
        """The labels this rule accepts on ``axis``; None when the rule does not look at it."""
        wanted = self.when.get(axis)
        if wanted is None:
            return None
        return frozenset([wanted] if isinstance(wanted, str) else wanted)

    def template_fields(self) -> list[str]:
        return [field for _, field, _, _ in string.Formatter().parse(self.queue) if field is not None]


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    version: int | str = 1
    axes: dict[str, Axis] = Field(min_length=1)
    routing: list[RoutingRule] = Field(min_length=1)
    business_rules: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_references(self) -> Taxonomy:
        for name in self.axes:
            if not LABEL_PATTERN.match(name):
                raise ValueError(f"axes: axis name {name!r} must be lower-case letters, digits or '_'")
        allowed_axes = ", ".join(self.axes)
        seen_names: set[str] = set()
        for index, rule in enumerate(self.routing):
            where = f"routing[{index}] ({rule.name})"
            if rule.name in seen_names:
                raise ValueError(f"{where}.name: duplicate rule name {rule.name!r}")
            seen_names.add(rule.name)
            for axis, wanted in rule.when.items():
                if axis not in self.axes:
                    raise ValueError(f"{where}.when: unknown axis {axis!r} (allowed: {allowed_axes})")
                labels = self.axes[axis].labels
                for label in [wanted] if isinstance(wanted, str) else wanted:
                    if label not in labels:
                        raise ValueError(
                            f"{where}.when.{axis}: {label!r} is not a label of axis {axis!r} "
                            f"(allowed: {', '.join(labels)})"
                        )
            for field in rule.template_fields():
                if field not in self.axes:
                    raise ValueError(f"{where}.queue: {{{field}}} is not an axis (allowed: {allowed_axes})")
        if self.routing[-1].when:
            raise ValueError(
                f"routing[{len(self.routing) - 1}] ({self.routing[-1].name}).when: the last rule must "
                "match every ticket (an empty 'when'), so that every ticket has a queue"
            )
        return self

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)

    def thresholds(self) -> dict[str, float]:
        return {name: axis.threshold for name, axis in self.axes.items()}

    def fingerprint(self) -> str:
        """Stable hash of everything in the file; part of ``prompt_version``."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:12]

    def label_combinations(self, axes: list[str]) -> Iterator[dict[str, str]]:
        """Every assignment of labels to ``axes`` (used to enumerate reachable queues)."""
        if not axes:
            yield {}
            return
        first, rest = axes[0], axes[1:]
        for label in self.axes[first].labels:
            for tail in self.label_combinations(rest):
                yield {first: label, **tail}


def _format_error(source: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    prefix = f"{source}: {where}: " if where else f"{source}: "
    more = exc.error_count() - 1
    return prefix + message + (f" (and {more} more problems)" if more > 0 else "")


def parse_taxonomy(data: Mapping[str, Any], source: str = "taxonomy") -> Taxonomy:
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        raise TaxonomyError(_format_error(source, exc)) from None


def load_taxonomy(path: Path | str | None = None) -> Taxonomy:
    """Load and check a taxonomy file (YAML or TOML); None means the one shipped in the package."""
    if path is None:
        text = resources.files("consumer.data").joinpath(DEFAULT_TAXONOMY_RESOURCE).read_text("utf-8")
        return parse_taxonomy(yaml.safe_load(text), source=f"<default {DEFAULT_TAXONOMY_RESOURCE}>")
    file = Path(path)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise TaxonomyError(f"TAXONOMY_PATH: cannot read {file}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaxonomyError(
            f"{file}: not valid {'TOML' if file.suffix == '.toml' else 'YAML'}: {first_line}"
        ) from None
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{file}: expected a mapping with keys axes, routing, business_rules")
    return parse_taxonomy(data, source=str(file))
