"""Measure the example store at a given size: ``python -m consumer.learn.measure TEXTS.csv --size N``.

The README's build time, query CPU and memory figures come from here. A labeled CSV (``text`` and
``label`` columns, e.g. BANKING77's training split with ``--label-column category``) is grown to
``--size`` examples by copying its rows with small edits (a word dropped, two words swapped, a
filler word added, a letter changed), so a store far larger than any shipped data set can be
measured on realistic text. The queries are the file's own rows, unedited.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from consumer.classify.prompt import Example
from consumer.learn.store import DEFAULT_DIM, DEFAULT_K, DEFAULT_MIN_SIMILARITY, ExampleStore

FILLERS = ("please", "hi", "thanks", "urgent", "hello", "again", "today", "now", "help", "asap")
QUERIES = 2000


def vary(text: str, rng: random.Random) -> str:
    """``text`` with one to three small edits, as another customer might have written it."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        edit = rng.randrange(4)
        at = rng.randrange(len(words)) if words else 0
        if edit == 0 and len(words) > 2:
            del words[at]
        elif edit == 1 and at + 1 < len(words):
            words[at], words[at + 1] = words[at + 1], words[at]
        elif edit == 2 and words and len(words[at]) > 3:
            word = words[at]
            cut = rng.randrange(len(word))
            words[at] = word[:cut] + rng.choice("aeiourstn") + word[cut + 1 :]
        else:
            words.insert(at, rng.choice(FILLERS))
    return " ".join(words)


def grown(rows: Sequence[tuple[str, str]], size: int, seed: int = 0) -> list[Example]:
    """``size`` examples: the rows themselves first, then edited copies of them in turn."""
    rng = random.Random(seed)
    examples = []
    for number in range(size):
        text, label = rows[number % len(rows)]
        body = text if number < len(rows) else vary(text, rng)
        examples.append(Example(f"ex-{number}", "", body, {"label": label}))
    return examples


def rss_mb() -> float:
    """Resident memory now (not the peak), from /proc: the store's own share is a difference."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def read_rows(path: Path, text_column: str, label_column: str) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [(row[text_column], row[label_column]) for row in csv.DictReader(handle)]


def measure(rows: Sequence[tuple[str, str]], size: int, dim: int, threads: int = 1) -> dict[str, float]:
    """Build time, memory, and CPU per query and per added example, for a store of ``size``."""
    examples = grown(rows, size)
    queries = [text for text, _ in rows[:QUERIES]]
    before = rss_mb()
    started = time.perf_counter()
    store = ExampleStore.build(examples[:-100], dim=dim, threads=threads)
    build_s = time.perf_counter() - started
    memory = rss_mb() - before
    started_cpu = time.process_time()
    store.add(examples[-100:])
    add_ms = (time.process_time() - started_cpu) * 1000 / 100
    for text in queries[:200]:  # warm caches
        store.nearest(text, DEFAULT_K, DEFAULT_MIN_SIMILARITY)
    started_cpu = time.process_time()
    for text in queries:
        store.nearest(text, DEFAULT_K, DEFAULT_MIN_SIMILARITY)
    query_ms = (time.process_time() - started_cpu) * 1000 / len(queries)
    encoded = store.encoder.encode(queries)
    started_cpu = time.process_time()
    for row in range(len(queries)):
        store.search(encoded[row : row + 1], DEFAULT_K, DEFAULT_MIN_SIMILARITY)
    search_ms = (time.process_time() - started_cpu) * 1000 / len(queries)
    return {
        "examples": len(store),
        "dim": dim,
        "build_s": build_s,
        "rss_mb": memory,
        "query_ms": query_ms,
        "search_only_ms": search_ms,
        "add_ms": add_ms,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer.learn.measure", description=__doc__)
    parser.add_argument("csv", type=Path, metavar="TEXTS.csv")
    parser.add_argument("--size", type=int, action="append", help="store size (repeatable; default 10000)")
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM)
    parser.add_argument("--threads", type=int, default=1, help="threads for the build (default 1)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args(argv)
    try:
        rows = read_rows(args.csv, args.text_column, args.label_column)
    except (OSError, KeyError) as exc:
        print(f"measure: {args.csv}: cannot read rows ({exc})", file=sys.stderr)
        return 2
    for size in args.size or [10_000]:
        figures = measure(rows, size, args.dim, args.threads)
        print(
            f"{figures['examples']:>7,} examples, {figures['dim']}-d: build {figures['build_s']:.1f} s "
            f"({args.threads} thread(s)), "
            f"+{figures['rss_mb']:.0f} MB RSS; nearest() {figures['query_ms']:.3f} ms CPU "
            f"(index search alone {figures['search_only_ms']:.3f} ms); add() {figures['add_ms']:.3f} ms "
            "CPU per example",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
