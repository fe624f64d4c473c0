"""The taxonomy file: axes, labels, thresholds, routing rules, business rules and reply handlers.

It is the single source of truth for the prompt, the model's output schema, the local tier's
labels, the routing and the topics created at start-up, so every cross-reference in it is checked
when it is loaded: a typo fails the start-up with one line naming the key and what is allowed,
instead of silently routing tickets to a topic nobody reads.

A key written twice in one mapping (an axis, a label, a rule's ``when`` axis, anything) is an
error naming the mapping, the key and both lines. YAML allows a loader to keep the last value
(PyYAML's ``safe_load`` does, silently), which would let a pasted label description replace the
one above it unnoticed; TOML forbids duplicates itself and ``tomllib`` reports the line.

An axis without ``threshold`` gets ``DEFAULT_THRESHOLD`` (0.75), a documented default rather
than an error: the bundled files set every threshold, but small one-off taxonomies (tests,
evaluation runs) rely on it, and 0.75 is what the bundled team and ticket_type axes use. What
made the old default a trap was that it was invisible, so the effective threshold is part of the
fingerprint (and thus of ``prompt_version``: dropping ``threshold: 0.8`` changes it, dropping a
``threshold: 0.75`` does not, as nothing changed) and ``taxonomy check`` marks it "default".
"""

from __future__ import annotations

import hashlib
import re
import string
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DEFAULT_TAXONOMY_RESOURCE = "taxonomy.yaml"
DEFAULT_THRESHOLD = 0.75
YAML_MERGE_TAG = "tag:yaml.org,2002:merge"
TOML_LINE = re.compile(r"\(at line (\d+), column \d+\)")


class TaxonomyError(ValueError):
    """A taxonomy file that cannot be used; the message is one line meant for the operator."""


class Axis(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=0.0, le=1.0)
    local_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="The local tier's own threshold: its probabilities are not Claude's confidences",
    )
    labels: dict[str, str] = Field(min_length=2)

    @property
    def threshold_is_default(self) -> bool:
        """True when the file left ``threshold`` out, so ``taxonomy check`` can say so."""
        return "threshold" not in self.model_fields_set

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


DraftTier = Literal["fast", "strong"]


class Handler(BaseModel):
    """A drafted-reply handler (``ticket-router draft``): which routed tickets it writes first replies
    for, and the instructions its model gets. A new handler is configuration, not code.

    It matches a routed ticket when the ticket's queue is one of ``queues`` (if given) and every axis
    named in ``when`` has one of the listed labels (as in a routing rule); at least one of the two
    must be given, so that a handler for every ticket is written down on purpose (``when: {}`` is
    refused; list the queues). The first matching handler in file order wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    queues: list[str] = Field(default_factory=list)
    when: dict[str, str | list[str]] = Field(default_factory=dict)
    instructions: str = Field(min_length=1, max_length=20_000)
    tier: DraftTier | None = Field(default=None, description="None: the DRAFT_TIER setting")
    max_tokens: int | None = Field(
        default=None, ge=64, le=16_000, description="Tokens for the reply; None: DRAFT_MAX_TOKENS"
    )

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, name: str) -> str:
        if not LABEL_PATTERN.match(name):
            raise ValueError(
                f"handler name {name!r} must be lower-case letters, digits, '_', '.' or '-' "
                "(it becomes a metric label)"
            )
        return name


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    version: int | str = 1
    axes: dict[str, Axis] = Field(min_length=1)
    routing: list[RoutingRule] = Field(min_length=1)
    business_rules: list[str] = Field(default_factory=list)
    handlers: list[Handler] = Field(
        default_factory=list, description="Drafted-reply handlers (ticket-router draft), first match wins"
    )

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
            self._check_when(where, rule.when)
            for field in rule.template_fields():
                if field not in self.axes:
                    raise ValueError(f"{where}.queue: {{{field}}} is not an axis (allowed: {allowed_axes})")
        if self.routing[-1].when:
            raise ValueError(
                f"routing[{len(self.routing) - 1}] ({self.routing[-1].name}).when: the last rule must "
                "match every ticket (an empty 'when'), so that every ticket has a queue"
            )
        if self.handlers:
            self._check_handlers()
        return self

    def _check_when(self, where: str, when: Mapping[str, str | list[str]]) -> None:
        """Every axis a ``when`` names exists and every label it lists is one of that axis's."""
        for axis, wanted in when.items():
            if axis not in self.axes:
                raise ValueError(f"{where}.when: unknown axis {axis!r} (allowed: {', '.join(self.axes)})")
            labels = self.axes[axis].labels
            for label in [wanted] if isinstance(wanted, str) else wanted:
                if label not in labels:
                    raise ValueError(
                        f"{where}.when.{axis}: {label!r} is not a label of axis {axis!r} "
                        f"(allowed: {', '.join(labels)})"
                    )

    def _check_handlers(self) -> None:
        """A handler may only name labels that exist and queues that routing can produce: a typo
        would otherwise leave a queue without drafts, silently."""
        # Imported here: routing imports this module (for the rule type), and routing is what knows
        # which queues the rules can produce.
        from consumer.routing import reachable_queues

        queues = reachable_queues(self) if any(handler.queues for handler in self.handlers) else []
        seen: set[str] = set()
        for index, handler in enumerate(self.handlers):
            where = f"handlers[{index}] ({handler.name})"
            if handler.name in seen:
                raise ValueError(f"{where}.name: duplicate handler name {handler.name!r}")
            seen.add(handler.name)
            if not handler.queues and not handler.when:
                raise ValueError(
                    f"{where}: a handler needs 'queues', 'when' or both (to draft for every ticket, "
                    "list every queue)"
                )
            self._check_when(where, handler.when)
            for queue in handler.queues:
                if queue not in queues:
                    raise ValueError(
                        f"{where}.queues: {queue!r} is not a queue routing can produce "
                        f"(allowed: {', '.join(queues)})"
                    )

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)

    def thresholds(self, tier: str | None = None) -> dict[str, float]:
        """Per axis, the confidence a tier's answer must reach. The local tier uses an axis's
        ``local_threshold`` when the file sets one (its class probabilities are calibrated
        differently from a model's stated confidence); every other tier uses ``threshold``."""
        if tier == "local":
            return {
                name: axis.threshold if axis.local_threshold is None else axis.local_threshold
                for name, axis in self.axes.items()
            }
        return {name: axis.threshold for name, axis in self.axes.items()}

    def fingerprint(self) -> str:
        """Stable hash of everything in the file but the handlers; part of ``prompt_version``.

        The dump includes defaulted fields, so it hashes the effective values (a left-out
        threshold counts as ``DEFAULT_THRESHOLD``), not the text as written.
        """
        # Handlers only write drafts of replies; editing one must not change how tickets are
        # classified or the router's prompt_version (a draft carries its handler's own version).
        effective = self.model_dump(
            mode="json", exclude_defaults=False, exclude_unset=False, exclude={"handlers"}
        )
        for axis in effective["axes"].values():
            if axis.get("local_threshold") is None:
                axis.pop("local_threshold", None)  # unset: the same fingerprint as before it existed
        canonical = orjson.dumps(effective, option=orjson.OPT_SORT_KEYS)
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


def _key_path(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_unique_keys(node: yaml.Node, path: str, loader: yaml.SafeLoader, seen: set[int]) -> None:
    """Raise on the first mapping under ``node`` that has a key twice (PyYAML keeps the last)."""
    if id(node) in seen:  # an alias to a node already checked
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _check_unique_keys(item, f"{path}[{index}]", loader, seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    first_line: dict[object, int] = {}
    for key_node, value_node in node.value:
        if key_node.tag == YAML_MERGE_TAG:  # `<<: *base`: explicit keys may override merged ones
            _check_unique_keys(value_node, path, loader, seen)
            continue
        if not isinstance(key_node, yaml.ScalarNode):  # safe_load refuses these keys itself
            continue
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise TaxonomyError(
                f"{loader.name}: {path or 'top level'}: duplicate key {key!r} on line {line} "
                f"(first on line {first_line[key]}); each key may appear once"
            )
        first_line[key] = line
        _check_unique_keys(value_node, _key_path(path, key), loader, seen)


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate mapping keys instead of keeping the last one."""
    loader = yaml.SafeLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_unique_keys(node, "", loader, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _toml_error(text: str, exc: tomllib.TOMLDecodeError) -> str:
    """The decoder's message plus the offending line, which names the key it does not name."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    found = TOML_LINE.search(message)
    lines = text.splitlines()
    if found and 0 < int(found.group(1)) <= len(lines):
        message += f": {lines[int(found.group(1)) - 1].strip()[:80]}"
    return message


def load_taxonomy(path: Path | str | None = None, *, origin: str = "TAXONOMY_PATH") -> Taxonomy:
    """Load and check a taxonomy file (YAML or TOML); None means the one shipped in the package.

    ``origin`` is what the user set to give ``path`` (the variable, or a command and its
    argument), so that a file that cannot be read is blamed on what they actually typed.
    """
    if path is None:
        text = resources.files("consumer.data").joinpath(DEFAULT_TAXONOMY_RESOURCE).read_text("utf-8")
        source = f"<default {DEFAULT_TAXONOMY_RESOURCE}>"
        return parse_taxonomy(parse_yaml(text, source), source=source)
    file = Path(path)
    try:
        text = file.read_text("utf-8")
    except OSError as exc:
        raise TaxonomyError(f"{origin}: cannot read {file}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else parse_yaml(text, str(file))
    except tomllib.TOMLDecodeError as exc:
        raise TaxonomyError(f"{file}: not valid TOML: {_toml_error(text, exc)}") from None
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaxonomyError(f"{file}: not valid YAML: {first_line}") from None
    if not isinstance(data, Mapping):
        raise TaxonomyError(f"{file}: expected a mapping with keys axes, routing, business_rules, handlers")
    return parse_taxonomy(data, source=str(file))
