"""Thresholds from evidence: the pure part of ``ticket-tools tune``.

A report's ``calibration`` section lists, per ticket, the tier whose answer stands, its confidence
on every axis and whether that answer was right (against gold labels, or the live router for a
shadow report). From it, per axis, the lowest threshold whose *precision* (the share right among
tickets at or above it) meets a target; the confidence is treated as a score to calibrate, never as
a probability. Then what a set of thresholds implies together, as the pipeline applies them: a
tier decides a ticket only when every axis clears its threshold, otherwise the ticket escalates to
the next tier or, after the last one, goes to human triage.

The taxonomy edit changes only the characters of each changed ``threshold:`` value (located with
PyYAML's node marks), so comments, order and layout stay exactly as written.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from consumer.config import KNOWN_TIERS
from consumer.errors import UserError
from consumer.taxonomy import TaxonomyError, parse_taxonomy, parse_yaml

GRID_STEPS = 100
"""Thresholds are proposed on a grid of 1/GRID_STEPS (0.01): values a person writes in a file."""
DEFAULT_MIN_SUPPORT = 20
NO_ANSWER_TIER = "(no answer)"
"""The row name of tickets no tier answered: no threshold can decide them."""
ALL_TIERS = "all"
PRECISION_TOLERANCE = 1e-9
"""19/20 is 0.95 on paper but may be a hair below in floating point; it still meets 0.95."""


# ---------------------------------------------------------------------------- the evidence


@dataclass(frozen=True)
class CalibrationRow:
    """One ticket: the tier whose answer stands (None: no answer), its confidences and correctness."""

    tier: str | None
    confidence: Mapping[str, float]
    correct: Mapping[str, bool]


@dataclass(frozen=True)
class Calibration:
    reference: str
    rows: list[CalibrationRow]
    tier_order: list[str]
    """The pipeline's tiers in order: an undecided ticket escalates, except at the last one."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_row(value: object, where: str) -> CalibrationRow:
    """One ``calibration.tickets`` entry, checked so a hand-edited report fails on one line."""
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected an object with tier, confidence and correct")
    tier, confidence, correct = value.get("tier"), value.get("confidence"), value.get("correct")
    if tier is not None and not isinstance(tier, str):
        raise UserError(f"{where}.tier: expected a tier name or null, got {tier!r}")
    if not isinstance(confidence, Mapping) or not all(_is_number(v) for v in confidence.values()):
        raise UserError(f"{where}.confidence: expected an object of axis: number")
    if not isinstance(correct, Mapping) or not all(isinstance(v, bool) for v in correct.values()):
        raise UserError(f"{where}.correct: expected an object of axis: true/false")
    return CalibrationRow(
        tier=tier,
        confidence={str(axis): float(v) for axis, v in confidence.items()},
        correct={str(axis): bool(v) for axis, v in correct.items()},
    )


def tier_order(declared: object, rows: Sequence[CalibrationRow]) -> list[str]:
    """The declared tier order (``calibration.tiers`` or an evaluate report's ``run.tiers``), then
    any other tier seen, in the service's order. Without a declaration the last tier seen is taken
    as the pipeline's last, where an undecided ticket goes to triage."""
    order = [tier for tier in declared if isinstance(tier, str)] if isinstance(declared, list) else []
    seen = {row.tier for row in rows if row.tier is not None}
    rank = {tier: index for index, tier in enumerate(KNOWN_TIERS)}
    extra = sorted(seen - set(order), key=lambda tier: (rank.get(tier, len(rank)), tier))
    return order + extra


def parse_calibration(report: object, source: str) -> Calibration:
    """The ``calibration`` section of an ``evaluate`` or ``shadow-report`` JSON report."""
    if not isinstance(report, Mapping):
        raise UserError(f"{source}: expected a JSON object (an evaluate or shadow-report --json report)")
    section = report.get("calibration")
    if not isinstance(section, Mapping):
        raise UserError(
            f"{source}: no 'calibration' section; write the report with a current "
            "`ticket-tools evaluate --json` or `ticket-tools shadow-report --json`"
        )
    tickets = section.get("tickets")
    if not isinstance(tickets, list):
        raise UserError(f"{source}: calibration.tickets: expected a list")
    rows = [parse_row(ticket, f"{source}: calibration.tickets[{i}]") for i, ticket in enumerate(tickets)]
    run = report.get("run")
    declared = section.get("tiers", run.get("tiers") if isinstance(run, Mapping) else None)
    return Calibration(str(section.get("reference", "")), rows, tier_order(declared, rows))


# ---------------------------------------------------------------------------- one axis


@dataclass(frozen=True)
class Precision:
    """At ``threshold``: how many answered tickets are at least that confident, and how many right."""

    threshold: float
    support: int
    right: int

    @property
    def precision(self) -> float | None:
        return self.right / self.support if self.support else None


def scored(rows: Iterable[CalibrationRow], axis: str) -> list[tuple[float, bool]]:
    """(confidence, correct) on ``axis`` for every answered ticket that has a confidence there."""
    return [
        (row.confidence[axis], row.correct.get(axis, False))
        for row in rows
        if row.tier is not None and axis in row.confidence
    ]


def precision_at(points: Sequence[tuple[float, bool]], threshold: float) -> Precision:
    """Precision at ``threshold``; ``>=`` because the pipeline lets ``confidence == threshold`` pass."""
    above = [right for confidence, right in points if confidence >= threshold]
    return Precision(threshold, len(above), sum(above))


def grid_from(lowest: float) -> list[float]:
    """Grid thresholds from the highest one not above ``lowest`` up to 1.0.

    Nothing below the lowest confidence seen is proposed: any lower threshold lets the same tickets
    through on this evidence, and would be a guess about answers the report never saw (a tier that
    escalated them hid them). ``k / GRID_STEPS`` is the same float as the written ``0.kk``.
    """
    start = max(0, min(GRID_STEPS, math.floor(lowest * GRID_STEPS)))
    while start < GRID_STEPS and (start + 1) / GRID_STEPS <= lowest:
        start += 1
    while start > 0 and start / GRID_STEPS > lowest:
        start -= 1
    return [k / GRID_STEPS for k in range(start, GRID_STEPS + 1)]


def meets(point: Precision, target: float, min_support: int) -> bool:
    precision = point.precision
    return (
        point.support >= min_support and precision is not None and precision >= target - PRECISION_TOLERANCE
    )


THRESHOLD = "threshold"
LOCAL_THRESHOLD = "local_threshold"
LOCAL_TIER = "local"


def setting_for(tier: str) -> str:
    """The taxonomy key that holds ``tier``'s threshold: the local tier has its own
    (``local_threshold``, falling back to ``threshold``) because its class probabilities are not
    calibrated like a model's stated confidence; every other tier uses ``threshold``."""
    return LOCAL_THRESHOLD if tier == LOCAL_TIER else THRESHOLD


@dataclass(frozen=True)
class ThresholdSet:
    """The thresholds as the taxonomy file holds them; ``for_tier`` is what the pipeline applies.

    ``local_threshold`` None means the file does not set it and the local tier uses ``threshold``.
    """

    threshold: Mapping[str, float]
    local_threshold: Mapping[str, float | None]

    def for_tier(self, tier: str | None) -> dict[str, float]:
        if tier != LOCAL_TIER:
            return dict(self.threshold)
        applied = {}
        for axis, value in self.threshold.items():
            own = self.local_threshold.get(axis)
            applied[axis] = value if own is None else own
        return applied

    def with_settings(self, settings: Mapping[tuple[str, str], float]) -> ThresholdSet:
        """This set with ``{(axis, key): value}`` written over it."""
        threshold, local = dict(self.threshold), dict(self.local_threshold)
        for (axis, key), value in settings.items():
            (local if key == LOCAL_THRESHOLD else threshold)[axis] = value
        return ThresholdSet(threshold, local)

    def as_dict(self) -> dict[str, Any]:
        return {THRESHOLD: dict(self.threshold), LOCAL_THRESHOLD: dict(self.local_threshold)}


def families(rows: Iterable[CalibrationRow]) -> dict[str, list[CalibrationRow]]:
    """Answered rows grouped by the taxonomy key that holds their tier's threshold."""
    groups: dict[str, list[CalibrationRow]] = {}
    for row in rows:
        if row.tier is not None:
            groups.setdefault(setting_for(row.tier), []).append(row)
    return groups


@dataclass(frozen=True)
class AxisProposal:
    """One threshold setting of one axis: the current value's figures, and the proposed one's
    (None: keep the current value)."""

    axis: str
    setting: str
    tiers: tuple[str, ...]
    target: float | None
    current: Precision
    proposed: Precision | None
    note: str

    @property
    def changed(self) -> bool:
        return self.proposed is not None and self.proposed.threshold != self.current.threshold

    @property
    def threshold(self) -> float:
        """The threshold to use: the proposed one, or the current one when none was proposed."""
        return self.proposed.threshold if self.proposed is not None else self.current.threshold


def propose_threshold(
    rows: Sequence[CalibrationRow],
    axis: str,
    current: float,
    target: float | None,
    min_support: int,
    setting: str = THRESHOLD,
) -> AxisProposal:
    """The lowest grid threshold whose precision on ``axis`` meets ``target`` with ``min_support``
    tickets at or above it; precision need not rise with the threshold, so every point is tried."""
    points = scored(rows, axis)
    now = precision_at(points, current)
    tiers = tuple(dict.fromkeys(row.tier for row in rows if row.tier is not None))

    def proposal(proposed: Precision | None, note: str) -> AxisProposal:
        return AxisProposal(axis, setting, tiers, target, now, proposed, note)

    if target is None:
        return proposal(None, "no target")
    if not points:
        return proposal(None, "no answered ticket")
    for threshold in grid_from(min(confidence for confidence, _ in points)):
        candidate = precision_at(points, threshold)
        if meets(candidate, target, min_support):
            return proposal(candidate, "")
    return proposal(None, f"none reaches {target:g} on ≥{min_support} tickets")


def propose_all(
    rows: Sequence[CalibrationRow], current: ThresholdSet, targets: Mapping[str, float], min_support: int
) -> list[AxisProposal]:
    """Per threshold setting the report has evidence for (the local tier's, the Claude tiers'),
    one proposal per axis in the taxonomy's order."""
    proposals: list[AxisProposal] = []
    for setting in (LOCAL_THRESHOLD, THRESHOLD):
        members = families(rows).get(setting, [])
        if not members:
            continue
        now = current.for_tier(LOCAL_TIER if setting == LOCAL_THRESHOLD else None)
        proposals.extend(
            propose_threshold(members, axis, now[axis], targets.get(axis), min_support, setting)
            for axis in current.threshold
        )
    return proposals


def settings_to_write(
    proposals: Sequence[AxisProposal], current: ThresholdSet
) -> dict[tuple[str, str], float]:
    """``{(axis, key): value}`` for the file: the changed proposals, plus the local tier's current
    value pinned where it silently followed a ``threshold`` that changes, so "kept" stays kept."""
    settings = {(p.axis, p.setting): p.threshold for p in proposals if p.changed}
    for p in proposals:
        follows = current.local_threshold.get(p.axis) is None
        moved = (p.axis, THRESHOLD) in settings
        if p.setting == LOCAL_THRESHOLD and not p.changed and follows and moved:
            settings[(p.axis, LOCAL_THRESHOLD)] = p.current.threshold
    return settings


# ---------------------------------------------------------------------------- all axes together


@dataclass(frozen=True)
class Implication:
    """For the tickets one tier answered: decided, escalated or triaged under one threshold set."""

    tier: str
    n: int
    decided: int
    escalated: int
    triaged: int
    axes_right: int
    """Right axis labels summed over the decided tickets (accuracy = this / (decided × axes))."""
    all_right: int
    axes: int

    def share(self, count: int) -> float:
        return count / self.n if self.n else 0.0

    @property
    def coverage(self) -> float:
        return self.share(self.decided)

    @property
    def accuracy(self) -> float | None:
        return self.axes_right / (self.decided * self.axes) if self.decided and self.axes else None

    @property
    def all_axes_correct(self) -> float | None:
        return self.all_right / self.decided if self.decided else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "n": self.n,
            "coverage": self.coverage,
            "accuracy": self.accuracy,
            "all_axes_correct": self.all_axes_correct,
            "escalate": self.share(self.escalated),
            "triage": self.share(self.triaged),
        }


def decides(row: CalibrationRow, thresholds: ThresholdSet) -> bool:
    """As the pipeline: every axis at or above its threshold for the row's tier; an axis without an
    answer is below."""
    if row.tier is None:
        return False
    return all(
        axis in row.confidence and row.confidence[axis] >= threshold
        for axis, threshold in thresholds.for_tier(row.tier).items()
    )


def implication_of(
    name: str, rows: Sequence[CalibrationRow], thresholds: ThresholdSet, escalates: bool
) -> Implication:
    """``escalates``: whether an undecided ticket of these rows goes on to another tier."""
    axes = list(thresholds.threshold)
    decided = [row for row in rows if decides(row, thresholds)]
    undecided = len(rows) - len(decided)
    rights = [[row.correct.get(axis, False) for axis in axes] for row in decided]
    return Implication(
        tier=name,
        n=len(rows),
        decided=len(decided),
        escalated=undecided if escalates else 0,
        triaged=0 if escalates else undecided,
        axes_right=sum(sum(right) for right in rights),
        all_right=sum(all(right) for right in rights),
        axes=len(axes),
    )


def implications(
    rows: Sequence[CalibrationRow], thresholds: ThresholdSet, order: Sequence[str]
) -> tuple[list[Implication], Implication]:
    """Per answering tier (in ``order``, then tickets no tier answered), and every ticket together.

    A ticket escalated here is one the next tier would be asked about; what that tier would answer
    is not in the report, so it counts as neither right nor wrong.
    """
    groups: dict[str, list[CalibrationRow]] = {tier: [] for tier in order}
    for row in rows:
        groups.setdefault(row.tier if row.tier is not None else NO_ANSWER_TIER, []).append(row)
    last = order[-1] if order else None
    per_tier = [
        implication_of(name, members, thresholds, escalates=name in order and name != last)
        for name, members in groups.items()
        if members
    ]
    total = Implication(
        ALL_TIERS,
        n=sum(i.n for i in per_tier),
        decided=sum(i.decided for i in per_tier),
        escalated=sum(i.escalated for i in per_tier),
        triaged=sum(i.triaged for i in per_tier),
        axes_right=sum(i.axes_right for i in per_tier),
        all_right=sum(i.all_right for i in per_tier),
        axes=len(thresholds.threshold),
    )
    return per_tier, total


# ---------------------------------------------------------------------------- the taxonomy file


@dataclass(frozen=True)
class Edit:
    """Replace ``text[start:end]`` with ``replacement`` (an insertion when start == end)."""

    start: int
    end: int
    replacement: str


def format_threshold(value: float) -> str:
    """``0.83``, ``1.0``: the shortest text that reads back as the same float."""
    return repr(round(value, 4))


def _mapping_value(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


Setting = tuple[str, str]
"""``(axis, key)``: ``("team", "threshold")`` or ``("team", "local_threshold")``."""


def _line_end(text: str, index: int) -> int:
    """The start of the line after the one holding ``index`` (the end of the text if none)."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _new_line(text: str, before: yaml.Node, line: str, source: str, axis: str) -> str:
    """``line`` indented like the key ``before``, which must start its own line."""
    start = _line_start(text, before.start_mark.index)
    indent = text[start : before.start_mark.index]
    if indent.strip():
        raise UserError(f"{source}: axes.{axis}: cannot tell where to add a line; set the threshold by hand")
    return f"{indent}{line}\n"


def setting_edit(text: str, axis: str, axis_node: yaml.Node, key: str, value: float, source: str) -> Edit:
    """The edit that sets ``axes.<axis>.<key>``: the characters of its value when the file has it;
    otherwise a new line, ``local_threshold`` just after ``threshold``, ``threshold`` just before
    ``labels``, indented like its neighbours."""
    if not isinstance(axis_node, yaml.MappingNode) or axis_node.flow_style:
        raise UserError(f"{source}: axes.{axis} is not a block mapping; set its {key} by hand")
    found = _mapping_value(axis_node, key)
    if found is not None:
        key_node, value_node = found
        if (
            not isinstance(value_node, yaml.ScalarNode)
            or value_node.start_mark.index < key_node.end_mark.index
        ):
            raise UserError(f"{source}: axes.{axis}.{key} is not a plain value (an alias?); set it by hand")
        return Edit(value_node.start_mark.index, value_node.end_mark.index, format_threshold(value))
    line = f"{key}: {format_threshold(value)}"
    after = _mapping_value(axis_node, THRESHOLD) if key == LOCAL_THRESHOLD else None
    if after is not None:
        position = _line_end(text, after[1].end_mark.index)
        return Edit(position, position, _new_line(text, after[0], line, source, axis))
    anchor = _mapping_value(axis_node, "labels") or (axis_node.value[0] if axis_node.value else None)
    if anchor is None:
        raise UserError(f"{source}: axes.{axis} is empty; set its {key} by hand")
    position = _line_start(text, anchor[0].start_mark.index)
    return Edit(position, position, _new_line(text, anchor[0], line, source, axis))


def setting_edits(text: str, settings: Mapping[Setting, float], source: str) -> list[Edit]:
    """One edit per setting, located in the YAML text; ``threshold`` before ``local_threshold``
    so that when both are new lines at one place they read in that order."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    axes = _mapping_value(root, "axes") if isinstance(root, yaml.MappingNode) else None
    if axes is None or not isinstance(axes[1], yaml.MappingNode):
        raise UserError(f"{source}: no 'axes' mapping")
    edits = []
    for (axis, key), value in sorted(settings.items(), key=lambda item: item[0][1] == LOCAL_THRESHOLD):
        found = _mapping_value(axes[1], axis)
        if found is None:
            raise UserError(f"{source}: no axis {axis!r}")
        edits.append(setting_edit(text, axis, found[1], key, value, source))
    spans = sorted((edit.start, edit.end) for edit in edits if edit.start != edit.end)
    if any(a == b for a, b in itertools.pairwise(spans)):
        raise UserError(f"{source}: two settings share one value (a YAML anchor); set them by hand")
    return edits


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    """Apply from the end of the text backwards, so earlier positions stay valid; of two
    insertions at one place, the first in ``edits`` ends up first."""
    for _, edit in sorted(enumerate(edits), key=lambda item: (item[1].start, item[0]), reverse=True):
        text = text[: edit.start] + edit.replacement + text[edit.end :]
    return text


def set_thresholds(text: str, settings: Mapping[Setting, float], source: str) -> str:
    """The taxonomy text with the given settings and nothing else changed; the result is parsed
    back and compared with the original, so an edit that went wrong is never written."""
    edited = apply_edits(text, setting_edits(text, settings, source))
    try:
        before = parse_taxonomy(parse_yaml(text, source), source)
        after = parse_taxonomy(parse_yaml(edited, source), source)
    except (TaxonomyError, yaml.YAMLError) as exc:
        raise UserError(
            f"{source}: the edited file does not load ({exc}); set the thresholds by hand"
        ) from None
    expected = before.model_dump()
    for (axis, key), value in settings.items():
        expected["axes"][axis][key] = value
    if after.model_dump() != expected:
        raise UserError(f"{source}: the edit changed more than the thresholds; set them by hand")
    return edited
