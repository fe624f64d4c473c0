"""``ticket-tools tune``: per-axis confidence thresholds from a report's evidence.

Reads the ``calibration`` section of an ``evaluate --json`` or ``shadow-report --json`` report
(per ticket: the tier that answered, its confidence and whether it was right, per axis) and, for
each axis with a target, proposes the lowest threshold whose precision (the share right among
tickets at or above it) meets the target with at least ``--min-support`` tickets. Then it shows
what the proposed thresholds do together, beside the current ones: the share each tier would
decide, how right those decisions are, and the share that would escalate or go to triage.

  ticket-tools evaluate tests/data/eval_labeled.jsonl --tiers local --json report.json
  ticket-tools tune report.json --target team=0.95 --default-target 0.9 --write tuned.yaml
  TAXONOMY_PATH=tuned.yaml ticket-router consume

``--write`` writes the taxonomy (``--taxonomy``, else TAXONOMY_PATH, else the shipped one) with
only the changed ``threshold:`` values replaced, after printing the diff; ``--write -`` prints
the file on stdout (the tables and diff then go to stderr).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from consumer.errors import UserError
from consumer.taxonomy import DEFAULT_TAXONOMY_RESOURCE, Taxonomy, load_taxonomy
from producer_tools.evaluation import thresholds as th
from producer_tools.evaluation.terminal import PIPED_WIDTH, pct
from producer_tools.kafka_io import load_tool_settings

STDOUT = "-"


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "tune",
        help="propose per-axis thresholds from an evaluate or shadow-report JSON report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "report", type=Path, metavar="REPORT.json", help="evaluate or shadow-report --json output"
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="AXIS=PRECISION",
        help="precision an axis must reach, e.g. team=0.95 (repeatable)",
    )
    parser.add_argument(
        "--default-target",
        metavar="PRECISION",
        help="target for every axis without --target (default: such axes keep their threshold)",
    )
    parser.add_argument(
        "--min-support",
        type=int,
        default=th.DEFAULT_MIN_SUPPORT,
        metavar="N",
        help="tickets needed at or above a threshold to trust its precision "
        f"(default {th.DEFAULT_MIN_SUPPORT})",
    )
    parser.add_argument(
        "--taxonomy",
        type=Path,
        metavar="FILE",
        help="taxonomy to tune (default: TAXONOMY_PATH, else the shipped one)",
    )
    parser.add_argument("--json", type=Path, dest="json_out", metavar="OUT.json", help="write the proposal")
    parser.add_argument(
        "--write",
        dest="write_out",
        metavar="OUT.yaml",
        help="write the tuned taxonomy (a diff is printed first); -: stdout",
    )
    parser.add_argument("--force", action="store_true", help="let --write or --json overwrite an input file")
    parser.set_defaults(handler=run)


# ---------------------------------------------------------------------------- the flags


def parse_precision(text: str, flag: str) -> float:
    """A target precision: a number in (0, 1]; 0 would accept anything, above 1 nothing."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value <= 1.0:
        raise UserError(f"{flag}: the precision must be a number in (0, 1], got {text!r}")
    return value


def parse_targets(specs: Sequence[str], default: str | None, axes: Sequence[str]) -> dict[str, float]:
    """``--target team=0.95`` per axis, ``--default-target`` for the rest; at least one is needed."""
    targets: dict[str, float] = {}
    for spec in specs:
        axis, sep, value = spec.partition("=")
        axis = axis.strip()
        if not sep or not axis:
            raise UserError(f"--target {spec!r}: expected AXIS=PRECISION, e.g. team=0.95")
        if axis not in axes:
            raise UserError(f"--target {spec!r}: unknown axis {axis!r} (axes: {', '.join(axes)})")
        if axis in targets:
            raise UserError(f"--target: axis {axis!r} is given twice")
        targets[axis] = parse_precision(value.strip(), f"--target {spec!r}")
    if default is not None:
        fallback = parse_precision(default, "--default-target")
        targets = {axis: targets.get(axis, fallback) for axis in axes}
    if not targets:
        raise UserError(
            "--target: give at least one (--target AXIS=PRECISION, or --default-target PRECISION)"
        )
    return targets


# ---------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class TaxonomySource:
    """The taxonomy to tune, its text (for the edit) and where it came from (for messages)."""

    taxonomy: Taxonomy
    text: str
    path: Path
    origin: str


def taxonomy_source(flag: Path | None) -> TaxonomySource:
    """``--taxonomy``, else TAXONOMY_PATH, else the shipped taxonomy: the file the router would read."""
    path: Path | None = flag
    origin = "--taxonomy"
    if path is None:
        configured = load_tool_settings().taxonomy_path
        path, origin = (Path(configured), "TAXONOMY_PATH") if configured is not None else (None, "")
    if path is None:
        shipped = resources.files("consumer.data").joinpath(DEFAULT_TAXONOMY_RESOURCE)
        return TaxonomySource(
            load_taxonomy(None), shipped.read_text("utf-8"), Path(str(shipped)), "the shipped taxonomy"
        )
    taxonomy = load_taxonomy(path, origin=origin)
    return TaxonomySource(taxonomy, path.read_text("utf-8"), path, f"{origin} {path}")


def read_report(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from None


def check_match(report: Any, calibration: th.Calibration, source: TaxonomySource, report_path: Path) -> None:
    """The report must have been measured on the taxonomy being tuned: same name, same axes."""
    if not calibration.rows:
        raise UserError(f"{report_path}: calibration has no tickets")
    run = report.get("run")
    measured = run.get("taxonomy") if isinstance(run, Mapping) else None
    name = source.taxonomy.name
    if isinstance(measured, str) and measured != name:
        raise UserError(
            f"{report_path} was measured with taxonomy {measured!r}, but {source.origin} is {name!r}; "
            "pass the report's taxonomy with --taxonomy"
        )
    seen = {axis for row in calibration.rows for axis in row.confidence}
    missing = [axis for axis in source.taxonomy.axis_names if axis not in seen]
    if missing:
        raise UserError(
            f"{report_path}: calibration has no confidence on {', '.join(missing)} of taxonomy {name!r} "
            f"(it has {', '.join(sorted(seen)) or 'none'}); pass the report's taxonomy with --taxonomy"
        )


def check_output(out: Path, inputs: Sequence[Path], flag: str, force: bool) -> None:
    """Refuse to overwrite the report or the taxonomy being read unless ``--force``."""
    if force:
        return
    for source in inputs:
        if out.resolve() == source.resolve():
            raise UserError(f"{flag} {out}: that is an input file; choose another name or add --force")


# ---------------------------------------------------------------------------- the proposal


def precision_dict(point: th.Precision) -> dict[str, Any]:
    return {"threshold": point.threshold, "support": point.support, "precision": point.precision}


def implied_dict(
    rows: Sequence[th.CalibrationRow], thresholds: th.ThresholdSet, order: Sequence[str]
) -> dict[str, Any]:
    per_tier, overall = th.implications(rows, thresholds, order)
    return {"overall": overall.as_dict(), "by_tier": [i.as_dict() for i in per_tier]}


def current_set(taxonomy: Taxonomy) -> th.ThresholdSet:
    """The taxonomy's thresholds as written (``local_threshold`` None where the file leaves it out)."""
    return th.ThresholdSet(
        {name: axis.threshold for name, axis in taxonomy.axes.items()},
        {name: axis.local_threshold for name, axis in taxonomy.axes.items()},
    )


def proposal_row(proposal: th.AxisProposal) -> dict[str, Any]:
    return {
        "axis": proposal.axis,
        "setting": proposal.setting,
        "tiers": list(proposal.tiers),
        "target": proposal.target,
        "current": precision_dict(proposal.current),
        "proposed": precision_dict(proposal.proposed) if proposal.proposed is not None else None,
        "changed": proposal.changed,
        "note": proposal.note,
    }


def build_proposal(
    report_path: Path,
    calibration: th.Calibration,
    source: TaxonomySource,
    targets: Mapping[str, float],
    min_support: int,
) -> dict[str, Any]:
    """The whole proposal as a JSON-ready dict; the terminal tables are drawn from it.

    ``changes`` is what ``--write`` puts in the file: ``{axis: {setting: value}}``.
    """
    current = current_set(source.taxonomy)
    proposals = th.propose_all(calibration.rows, current, targets, min_support)
    settings = th.settings_to_write(proposals, current)
    proposed = current.with_settings(settings)
    changes: dict[str, dict[str, float]] = {}
    for (axis, key), value in settings.items():
        changes.setdefault(axis, {})[key] = value
    order = calibration.tier_order
    return {
        "report": str(report_path),
        "reference": calibration.reference,
        "n": len(calibration.rows),
        "taxonomy": {"name": source.taxonomy.name, "file": str(source.path)},
        "min_support": min_support,
        "tiers": order,
        "proposals": [proposal_row(p) for p in proposals],
        "thresholds": {"current": current.as_dict(), "proposed": proposed.as_dict()},
        "changes": changes,
        "implied": {
            "current": implied_dict(calibration.rows, current, order),
            "proposed": implied_dict(calibration.rows, proposed, order),
        },
    }


def settings_of(changes: Mapping[str, Mapping[str, float]]) -> dict[th.Setting, float]:
    return {(axis, key): value for axis, keys in changes.items() for key, value in keys.items()}


# ---------------------------------------------------------------------------- the terminal


def _at(point: Mapping[str, Any] | None) -> str:
    if point is None:
        return "—"
    return f"{pct(point['precision'])} (n={point['support']})"


def axes_table(proposal: Mapping[str, Any]) -> Table:
    evidence = {row["setting"]: ",".join(row["tiers"]) for row in proposal["proposals"]}
    table = Table(
        title="Thresholds per axis (precision: share right among answered tickets at or above it)",
        caption="; ".join(f"{setting}: from the answers of {tiers}" for setting, tiers in evidence.items()),
    )
    for column in ("axis", "setting", "target", "now", "precision now", "proposed", "precision then", "note"):
        table.add_column(column, justify="left" if column in ("axis", "setting", "note") else "right")
    for row in proposal["proposals"]:
        proposed = row["proposed"]
        threshold = f"{proposed['threshold']:.2f}" if proposed is not None else "—"
        table.add_row(
            row["axis"],
            row["setting"],
            "—" if row["target"] is None else f"{row['target']:g}",
            f"{row['current']['threshold']:g}",
            _at(row["current"]),
            f"[bold]{threshold}[/bold]" if row["changed"] else threshold,
            _at(proposed),
            row["note"],
        )
    return table


def _pair(now: float | None, proposed: float | None) -> str:
    return f"{pct(now)} → {pct(proposed)}"


def implied_table(proposal: Mapping[str, Any]) -> Table:
    """Current → proposed, per deciding tier when the report has several, then every ticket."""
    table = Table(
        title="All axes together: current → proposed thresholds",
        caption="a tier decides a ticket when every axis clears its threshold; "
        "otherwise it escalates to the next tier, or after the last one goes to triage",
    )
    for column in (
        "tier",
        "tickets",
        "decided",
        "accuracy of decided",
        "all axes right",
        "escalate",
        "triage",
    ):
        table.add_column(column, justify="left" if column == "tier" else "right")
    now, new = proposal["implied"]["current"], proposal["implied"]["proposed"]
    rows = list(zip(now["by_tier"], new["by_tier"], strict=True)) if len(now["by_tier"]) > 1 else []
    for before, after in [*rows, (now["overall"], new["overall"])]:
        table.add_row(
            before["tier"],
            str(before["n"]),
            _pair(before["coverage"], after["coverage"]),
            _pair(before["accuracy"], after["accuracy"]),
            _pair(before["all_axes_correct"], after["all_axes_correct"]),
            _pair(before["escalate"], after["escalate"]),
            _pair(before["triage"], after["triage"]),
        )
    return table


def console_for(file: TextIO) -> Console:
    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=PIPED_WIDTH)


def render(proposal: Mapping[str, Any], console: Console) -> None:
    console.print(
        f"[bold]{proposal['report']}[/bold]: {proposal['n']} tickets, "
        f"taxonomy {proposal['taxonomy']['name']}, "
        f"tiers {','.join(proposal['tiers']) or '?'}, min support {proposal['min_support']}",
        highlight=False,
    )
    console.print(f"right = {proposal['reference'] or '?'}", highlight=False)
    console.print(axes_table(proposal))
    console.print(implied_table(proposal))


# ---------------------------------------------------------------------------- writing


def check_writable(source: TaxonomySource) -> None:
    """TOML taxonomies are not edited: no layout-keeping TOML writer is available here."""
    if source.path.suffix == ".toml":
        raise UserError(f"--write: {source.path} is TOML; set the thresholds by hand or use a YAML taxonomy")


def tuned_text(source: TaxonomySource, changed: Mapping[th.Setting, float]) -> str:
    """The taxonomy text with the changed thresholds, edited character-exactly and checked to load."""
    if not changed:
        return source.text
    return th.set_thresholds(source.text, changed, str(source.path))


def unified_diff(before: str, after: str, old_name: str, new_name: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), fromfile=old_name, tofile=new_name
    )
    return "".join(lines)


def write_taxonomy(
    source: TaxonomySource, changed: Mapping[th.Setting, float], out: str, log: TextIO
) -> None:
    """Print the diff on ``log``, then write the file (or print it on stdout for ``-``)."""
    text = tuned_text(source, changed)
    name = "<stdout>" if out == STDOUT else out
    diff = unified_diff(source.text, text, str(source.path), name)
    log.write(diff if diff else f"no threshold changed: {name} is the same as {source.path}\n")
    log.flush()
    if out == STDOUT:
        sys.stdout.write(text)
    else:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--write {out}: cannot write: {exc.strerror}") from None
        log.write(f"wrote {out}\n")


def write_json(out: Path, proposal: Mapping[str, Any]) -> None:
    try:
        out.write_bytes(orjson.dumps(proposal, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:
        raise UserError(f"--json {out}: cannot write: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    if args.min_support < 1:
        raise UserError("--min-support must be at least 1")
    source = taxonomy_source(args.taxonomy)
    targets = parse_targets(args.target, args.default_target, source.taxonomy.axis_names)
    inputs = [args.report, source.path]
    if args.write_out is not None:
        check_writable(source)
    if args.write_out is not None and args.write_out != STDOUT:
        check_output(Path(args.write_out), inputs, "--write", args.force)
    if args.json_out is not None:
        check_output(args.json_out, inputs, "--json", args.force)
    report = read_report(args.report)
    calibration = th.parse_calibration(report, str(args.report))
    check_match(report, calibration, source, args.report)
    proposal = build_proposal(args.report, calibration, source, targets, args.min_support)
    log = sys.stderr if args.write_out == STDOUT else sys.stdout
    render(proposal, console_for(log))
    if args.json_out is not None:
        write_json(args.json_out, proposal)
    if args.write_out is not None:
        write_taxonomy(source, settings_of(proposal["changes"]), args.write_out, log)
    return 0
