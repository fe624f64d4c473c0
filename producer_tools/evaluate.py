"""``ticket-tools evaluate``: measure the router's classifier pipeline on a labeled file.

The pipeline is the service's own (consumer.service.build_tiers / build_pipeline with the same
Settings, overridden by the flags below), so the figures are what production would do with the
same configuration: accuracy, macro-F1, per-class precision/recall and confusion per axis,
consistency over repeated runs, accuracy by language and account tier, escalations and tier mix,
routed vs triaged, cost per 10k tickets, latency, the coverage-vs-accuracy curve that tells
how far a threshold can be lowered before the tier that decides alone gets too many wrong, and the
example store's label recall@k (how often retrieved examples show a ticket's true label).

  ticket-tools evaluate tests/data/eval_labeled.jsonl --tiers local --html report.html
  ticket-tools evaluate test.csv --train train.csv --taxonomy taxonomies/banking77.yaml \\
      --text-column text --label-column category --tiers local --json out.json
  ticket-tools evaluate banking77-train.csv --cv 5 --taxonomy taxonomies/banking77.yaml \\
      --text-column text --label-column category --tiers local

With --corrections there is no LABELED file and nothing is classified: the corrections people made
(CORRECTIONS_TOPIC) are joined with what the live router decided (its queue and triage topics) by
event id, and the same report describes the router as deployed. An axis a correction does not
name counts as confirmed; a queue override is the right queue.

  ticket-tools evaluate --corrections --bootstrap kafka:9092 --since 2026-11-01 --html prod.html
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.config import ConfigError, Settings, load_settings
from consumer.errors import UserError
from consumer.taxonomy import Taxonomy, load_taxonomy
from producer_tools.decisions import read_live_decisions, read_to_end
from producer_tools.evaluation import golden, metrics
from producer_tools.evaluation.dataset import LabeledTicket, read_labeled, training_jsonl
from producer_tools.evaluation.retrieval import DEFAULT_RETRIEVAL_K
from producer_tools.evaluation.runner import AxisAnswer, FoldRun, TicketOutcome, run_pipeline
from producer_tools.evaluation.summary import summarize
from producer_tools.kafka_io import (
    Connection,
    add_connection_arguments,
    cluster_topics,
    connection_from_args,
    require_topics,
)
from schemas.corrections import Correction

DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class Options:
    """The flags that shape a run, checked once so the run itself has nothing left to validate."""

    labeled: Path
    repeat: int
    concurrency: int
    train: Path | None
    cv: int | None
    seed: int
    text_column: str | None
    label_column: str | None
    overrides: dict[str, object]
    retrieval_k: int = DEFAULT_RETRIEVAL_K


def add_parser(subcommands: Any) -> None:
    parser: argparse.ArgumentParser = subcommands.add_parser(
        "evaluate",
        help="measure the classifier pipeline on a labeled file (accuracy, cost, latency, coverage)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "labeled",
        type=Path,
        nargs="?",
        metavar="LABELED",
        help="labeled JSONL, or CSV with --text-column (none with --corrections)",
    )
    parser.add_argument(
        "--tiers", help="ordered tiers, e.g. local or fast,strong (default: TIERS or the service's)"
    )
    parser.add_argument(
        "--repeat", type=int, metavar="K", help="run K times to measure consistency (default 1)"
    )
    parser.add_argument(
        "--taxonomy", type=Path, metavar="FILE", help="taxonomy file (default: TAXONOMY_PATH)"
    )
    parser.add_argument(
        "--train",
        type=Path,
        metavar="TRAIN",
        help="fit the local tier on TRAIN (JSONL, or CSV with the columns)",
    )
    parser.add_argument("--cv", type=int, metavar="K", help="stratified K-fold cross-validation on LABELED")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed for --cv (default 0)")
    parser.add_argument("--text-column", metavar="C", help="CSV column with the ticket text (default: text)")
    parser.add_argument("--label-column", metavar="C", help="CSV column with the label (default: label)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"tickets in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--retrieval-k",
        type=int,
        default=DEFAULT_RETRIEVAL_K,
        metavar="K",
        help="label recall@K of the example store, from the training side only "
        f"(default {DEFAULT_RETRIEVAL_K}; 0: off)",
    )
    parser.add_argument(
        "--json", type=Path, dest="json_out", metavar="OUT.json", help="write the full report"
    )
    parser.add_argument(
        "--html", type=Path, dest="html_out", metavar="OUT.html", help="write a self-contained page"
    )
    live = parser.add_argument_group("the live router on its corrections (a production golden set)")
    live.add_argument(
        "--corrections",
        action="store_true",
        help="score the live router's decisions against the corrections people made, instead of LABELED",
    )
    live.add_argument("--corrections-topic", metavar="T", help="default: CORRECTIONS_TOPIC")
    live.add_argument(
        "--since", metavar="TIME", help="only corrections made at or after TIME (ISO 8601; UTC if no zone)"
    )
    live.add_argument("--until", metavar="TIME", help="only corrections made before TIME")
    add_connection_arguments(parser)
    parser.set_defaults(handler=run)


LABELED_ONLY_FLAGS = {
    "cv": "--cv",
    "train": "--train",
    "tiers": "--tiers",
    "repeat": "--repeat",
    "text_column": "--text-column",
    "label_column": "--label-column",
}
CORRECTIONS_ONLY_FLAGS = {
    "corrections_topic": "--corrections-topic",
    "since": "--since",
    "until": "--until",
    "bootstrap": "--bootstrap",
}


def given_flags(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    return [flag for dest, flag in flags.items() if getattr(args, dest) is not None]


def check_mode(args: argparse.Namespace) -> None:
    """LABELED or --corrections, and only the flags that mean something for the one chosen."""
    if args.corrections:
        if args.labeled is not None:
            raise UserError("--corrections reads its gold labels from the corrections topic; drop LABELED")
        misplaced = given_flags(args, LABELED_ONLY_FLAGS)
        if misplaced:
            raise UserError(
                f"--corrections scores what the live router decided and classifies nothing; "
                f"do not combine it with {', '.join(misplaced)}"
            )
        return
    if args.labeled is None:
        raise UserError("LABELED is required (or --corrections, to score the live router on its corrections)")
    misplaced = given_flags(args, CORRECTIONS_ONLY_FLAGS)
    if misplaced:
        raise UserError(f"{', '.join(misplaced)} only apply with --corrections")


def options_from(args: argparse.Namespace) -> Options:
    """Check the flags that depend on each other; each mistake is one line for the user."""
    check_mode(args)
    repeat = 1 if args.repeat is None else args.repeat
    if repeat < 1:
        raise UserError("--repeat must be at least 1")
    if args.concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    if args.retrieval_k < 0:
        raise UserError("--retrieval-k must be 0 (off) or more")
    if args.cv is not None and args.cv < 2:
        raise UserError("--cv needs at least 2 folds")
    if args.cv is not None and args.train is not None:
        raise UserError("--cv trains on the folds of LABELED; do not combine it with --train")
    overrides: dict[str, object] = {}
    if args.tiers is not None:
        overrides["tiers"] = args.tiers
    if args.taxonomy is not None:
        overrides["taxonomy_path"] = args.taxonomy
    return Options(
        labeled=args.labeled,
        repeat=repeat,
        concurrency=args.concurrency,
        train=args.train,
        cv=args.cv,
        seed=args.seed,
        text_column=args.text_column,
        label_column=args.label_column,
        overrides=overrides,
        retrieval_k=args.retrieval_k,
    )


# Settings a flag of this command sets: an error about one of them is about the flag.
FLAG_FOR_SETTING = {"TIERS": "--tiers", "TAXONOMY_PATH": "--taxonomy", "LOCAL_TRAINING_PATH": "--train"}


def flag_named(message: str) -> str:
    """``TIERS: unknown tier 'turbo' …`` as ``--tiers: …`` when the value came from the flag."""
    setting, sep, rest = message.partition(": ")
    flag = FLAG_FOR_SETTING.get(setting)
    return f"{flag}{sep}{rest}" if sep and flag is not None else message


def settings_for(options: Options, training_path: Path | None = None) -> Settings:
    """The service's Settings (environment first), with the flags and a training file on top."""
    overrides = dict(options.overrides)
    if training_path is not None:
        overrides["local_training_path"] = training_path
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        raise ConfigError(flag_named(str(exc))) from None
    if (options.train is not None or options.cv is not None) and "local" not in settings.effective_tiers:
        raise UserError(
            f"--train and --cv fit the local tier, but the tiers are {','.join(settings.effective_tiers)}; "
            "add local to --tiers"
        )
    return settings


def write_training_file(items: Sequence[LabeledTicket], directory: Path, name: str) -> Path:
    """Training rows in the format LOCAL_TRAINING_PATH reads, so the tier trains as in production."""
    path = directory / name
    path.write_bytes(training_jsonl(items))
    return path


def stratified_folds(labels: Sequence[str], k: int, seed: int) -> list[list[int]]:
    """Test indices of each of ``k`` folds, every label spread evenly (scikit-learn's StratifiedKFold)."""
    from sklearn.model_selection import StratifiedKFold

    if k > len(labels):
        raise UserError(f"--cv {k}: only {len(labels)} labeled rows")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        return [list(test) for _, test in splitter.split(list(labels), list(labels))]
    except ValueError as exc:
        raise UserError(f"--cv {k}: {exc}") from None


def fold_figures(
    items: Sequence[LabeledTicket], outcomes: Sequence[TicketOutcome], axes: Sequence[str]
) -> dict[str, float]:
    """Mean accuracy and macro-F1 over axes for one fold's first run."""
    accuracies, f1s = [], []
    for axis in axes:
        gold = [item.gold[axis] for item in items]
        predicted = [outcome.labels[axis] for outcome in outcomes]
        accuracies.append(metrics.accuracy(gold, predicted))
        f1s.append(metrics.macro_f1(gold, predicted))
    return {"accuracy": sum(accuracies) / len(axes), "macro_f1": sum(f1s) / len(axes)}


async def cross_validate(
    options: Options, taxonomy: Taxonomy, items: Sequence[LabeledTicket], directory: Path
) -> tuple[dict[str, Any], list[LabeledTicket], FoldRun]:
    """Train on k-1 folds, evaluate on the held-out one; every row is predicted exactly once.

    Returns the per-fold figures and the pooled out-of-fold run (rows in fold order), from which
    the per-class figures and curves are computed as for a single run.
    """
    assert options.cv is not None
    axes = taxonomy.axis_names
    folds = stratified_folds([item.gold[axes[0]] for item in items], options.cv, options.seed)
    pooled_items: list[LabeledTicket] = []
    pooled = FoldRun(runs=[[] for _ in range(options.repeat)], local_answers=[], train_s=0.0, eval_s=0.0)
    per_fold = []
    for number, test_indices in enumerate(folds, start=1):
        held_out = set(test_indices)
        train = [item for index, item in enumerate(items) if index not in held_out]
        test = [items[index] for index in test_indices]
        path = write_training_file(train, directory, f"fold-{number}.jsonl")
        fold = await run_pipeline(
            settings_for(options, path), taxonomy, test, options.repeat, options.concurrency
        )
        per_fold.append(
            {
                "fold": number,
                "n_train": len(train),
                "n_test": len(test),
                "train_s": fold.train_s,
                "eval_s": fold.eval_s,
            }
            | fold_figures(test, fold.runs[0], axes)
        )
        pooled_items.extend(test)
        for pooled_run, run in zip(pooled.runs, fold.runs, strict=True):
            pooled_run.extend(run)
        if pooled.local_answers is not None and fold.local_answers is not None:
            pooled.local_answers.extend(fold.local_answers)
        else:
            pooled.local_answers = None
        pooled.train_s += fold.train_s
        pooled.eval_s += fold.eval_s
        pooled.tiers = fold.tiers
    mean, std = metrics.mean_and_std([fold["accuracy"] for fold in per_fold])
    cv = {
        "folds": options.cv,
        "seed": options.seed,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "per_fold": per_fold,
    }
    return cv, pooled_items, pooled


async def single_run(
    options: Options, taxonomy: Taxonomy, items: Sequence[LabeledTicket], directory: Path
) -> tuple[FoldRun, int | None]:
    """One pipeline over LABELED, the local tier fitted on --train when given."""
    training_path, n_train = None, None
    if options.train is not None:
        train = read_labeled(options.train, taxonomy, options.text_column, options.label_column)
        training_path, n_train = write_training_file(train, directory, "train.jsonl"), len(train)
    settings = settings_for(options, training_path)
    return await run_pipeline(settings, taxonomy, items, options.repeat, options.concurrency), n_train


def retrieval_figures(
    options: Options, settings: Settings, taxonomy: Taxonomy, items: Sequence[LabeledTicket]
) -> dict[str, Any]:
    """Label recall@k, the store built from the training side only: the other folds, --train, or
    the local tier's training file (LOCAL_TRAINING_PATH or the bundled one); never the ticket itself."""
    from consumer.classify.claude import load_examples
    from consumer.learn.dense import dense_encoder
    from producer_tools.evaluation import retrieval

    if options.cv is not None:
        first_axis = taxonomy.axis_names[0]
        folds = stratified_folds([item.gold[first_axis] for item in items], options.cv, options.seed)
        sides, source = retrieval.fold_sides(items, folds), f"the other {options.cv - 1} folds"
    elif options.train is not None:
        train = read_labeled(options.train, taxonomy, options.text_column, options.label_column)
        sides, source = [retrieval.Side(retrieval.examples_of(train), items)], str(options.train)
    else:
        path = settings.local_training_path
        sides = [retrieval.Side(load_examples(path), items)]
        source = str(path) if path is not None else "the bundled training file"
    floor = settings.retrieval_min_similarity
    dense = dense_encoder(settings.dense_encoder)
    found = retrieval.retrieve(sides, options.retrieval_k, floor, dense, settings.retrieved_per_label)
    return retrieval.recall_report(found, taxonomy.axis_names, options.retrieval_k, floor, source)


async def evaluate(options: Options) -> dict[str, Any]:
    """The full report dict (what ``--json`` writes)."""
    started = time.perf_counter()
    origin = "--taxonomy" if "taxonomy_path" in options.overrides else "TAXONOMY_PATH"
    settings = settings_for(options)
    taxonomy = load_taxonomy(settings.taxonomy_path, origin=origin)
    items = read_labeled(options.labeled, taxonomy, options.text_column, options.label_column)
    cv: dict[str, Any] | None = None
    n_train: int | None = None
    with tempfile.TemporaryDirectory(prefix="ticket-evaluate-") as tmp:
        if options.cv is not None:
            cv, evaluated, fold = await cross_validate(options, taxonomy, items, Path(tmp))
        else:
            evaluated = list(items)
            fold, n_train = await single_run(options, taxonomy, items, Path(tmp))
    local: list[dict[str, AxisAnswer]] | None = fold.local_answers
    report = summarize(taxonomy, evaluated, fold.runs, local, settings.prices)
    if cv is not None:
        report["pooled_accuracy"] = report["accuracy"]
        report["accuracy"] = cv["accuracy_mean"]
        report["cv"] = cv
    if options.retrieval_k > 0:
        report["retrieval"] = retrieval_figures(options, settings, taxonomy, items)
    report["run"] = {
        "labeled_file": str(options.labeled),
        "taxonomy": taxonomy.name,
        "taxonomy_fingerprint": taxonomy.fingerprint(),
        "tiers": fold.tiers,
        "models": fold.models,
        "repeat": options.repeat,
        "concurrency": options.concurrency,
        "train_file": str(options.train) if options.train is not None else None,
        "n_train": n_train,
        "train_s": fold.train_s,
        "eval_s": fold.eval_s,
        "wall_s": time.perf_counter() - started,
    }
    return report


# --- the live router on its corrections ---------------------------------------------------------

TIME_EXAMPLES = "e.g. 2026-11-01 or 2026-11-01T09:00:00+01:00"


def moment(flag: str, text: str | None) -> datetime | None:
    """An ISO 8601 date or time from the command line; one without a zone is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{flag}: expected an ISO 8601 date or time ({TIME_EXAMPLES}), not {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def window_from(args: argparse.Namespace) -> golden.Window:
    since, until = moment("--since", args.since), moment("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise UserError(f"--since {args.since} is not before --until {args.until}")
    return golden.Window(since, until)


async def read_corrections(connection: Connection, topic: str) -> tuple[list[Correction], int]:
    """Every record of the corrections topic, to its high watermark, and how many were not one."""
    require_topics(await cluster_topics(connection), [topic], " (--corrections-topic or CORRECTIONS_TOPIC)")
    try:
        records = await read_to_end(connection, [topic])
    except TimeoutError:
        raise UserError(f"reading {topic} from {connection.bootstrap} did not finish in time") from None
    return golden.parse_corrections(value for _, value in records)


def nothing_to_score(topic: str, join: dict[str, Any]) -> str:
    """Why a run has no figures, in the join's own terms (the usual cause: the wrong topics)."""
    return (
        f"no correction on {topic!r} could be scored (records read {join['records_read']}, "
        f"corrected events {join['corrected_events']}, of them not on the queue or triage topics "
        f"{join['unmatched']}; events on those topics {join['events_read']}; not scored "
        f"{sum(join['not_scored'].values())}; outside --since/--until {join['outside_window']})"
    )


async def corrections_report(args: argparse.Namespace) -> dict[str, Any]:
    """The usual report dict, of the live decisions the corrections name, plus the join's figures.

    The corrections are read before the decisions: every event a correction names was decided
    before it was corrected, so it is on the queue topics by the time they are read (unless
    retention dropped it, which the join counts as unmatched).
    """
    started = time.perf_counter()
    window = window_from(args)
    connection = connection_from_args(args)
    settings = connection.settings
    origin = "--taxonomy" if args.taxonomy is not None else "TAXONOMY_PATH"
    taxonomy = load_taxonomy(args.taxonomy or settings.taxonomy_path, origin=origin)
    topic = args.corrections_topic or settings.corrections_topic
    corrections, invalid = await read_corrections(connection, topic)
    decisions = await read_live_decisions(connection, settings, taxonomy)
    found = golden.join(corrections, decisions, taxonomy, window, invalid)
    if not found.scored:
        raise UserError(nothing_to_score(topic, found.join))
    reference = f"corrections on {topic} (the live labels on the axes a correction does not name)"
    report = summarize(
        taxonomy, found.items, [found.outcomes], None, reference=reference, queues=found.queues
    )
    report["by_tier"] = golden.tier_report(found, taxonomy.axis_names)
    report["coverage_curve"]["source"] = "live answers, confidence of the tier that answered"
    report["corrections"] = {"topic": topic, **found.join}
    report["run"] = {
        "labeled_file": None,
        "corrections_topic": topic,
        "bootstrap": connection.bootstrap,
        "taxonomy": taxonomy.name,
        "taxonomy_fingerprint": taxonomy.fingerprint(),
        "tiers": golden.tiers_seen(found.outcomes),
        "models": golden.models_seen(found.outcomes),
        "repeat": 1,
        "wall_s": time.perf_counter() - started,
    }
    return report


def run(args: argparse.Namespace) -> int:
    from producer_tools.evaluation import terminal

    if args.corrections:
        check_mode(args)
        report = asyncio.run(corrections_report(args))
    else:
        report = asyncio.run(evaluate(options_from(args)))
    if args.json_out is not None:
        args.json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if args.html_out is not None:
        from producer_tools.evaluation import html_report

        args.html_out.write_text(html_report.render(report), encoding="utf-8")
    terminal.render(report)
    # A golden set of triaged tickets is still a true account of production, not a failed run.
    return 0 if args.corrections else exit_status(report)


def exit_status(report: dict[str, Any]) -> int:
    """1 when no ticket got an answer from any tier (an unreachable API, a bad key): the figures of
    such a run describe the outage, not the classifier, and a script must not take them as a score."""
    outcomes = report["outcomes"]
    answered = outcomes["routed"] + outcomes["triaged_by_kind"].get("low_confidence", 0)
    if report["n"] and answered == 0:
        kinds = ", ".join(f"{kind} {share:.0%}" for kind, share in outcomes["triaged_by_kind"].items())
        print(f"ticket-tools evaluate: error: no ticket was classified ({kinds})", file=sys.stderr)
        return 1
    return 0
