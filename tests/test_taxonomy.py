"""A bad taxonomy fails at load with one line naming the key and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.taxonomy import (
    DEFAULT_THRESHOLD,
    Taxonomy,
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
    parse_yaml,
)

ROOT = Path(__file__).parents[1]


def base() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "consumer" / "data" / "taxonomy.yaml").read_text())
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(TaxonomyError) as caught:
        parse_taxonomy(data, source="t.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_default_taxonomy_has_the_spec_axes_and_thresholds() -> None:
    taxonomy = load_taxonomy()
    assert list(taxonomy.axes) == ["team", "ticket_type", "urgency", "sentiment"]
    assert set(taxonomy.axes["team"].labels) == {
        "billing",
        "infrastructure",
        "product",
        "security",
        "onboarding",
        "general",
    }
    assert taxonomy.axes["urgency"].threshold > taxonomy.axes["team"].threshold


def test_unknown_label_in_a_rule_names_the_rule_and_the_allowed_labels() -> None:
    data = base()
    data["routing"][0]["when"]["urgency"] = "urgent"
    message = error_of(data)
    assert "routing[0] (critical-security).when.urgency" in message
    assert "'urgent'" in message and "critical, high, normal, low" in message


def test_unknown_axis_in_a_template() -> None:
    data = base()
    data["routing"][1]["queue"] = "critical-{squad}"
    assert "{squad} is not an axis (allowed: team, ticket_type, urgency, sentiment)" in error_of(data)


def test_last_rule_must_match_everything() -> None:
    data = base()
    data["routing"] = data["routing"][:2]
    assert "the last rule must match every ticket" in error_of(data)


def test_threshold_out_of_range_and_unknown_keys() -> None:
    data = base()
    data["axes"]["team"]["threshold"] = 1.5
    assert "axes.team.threshold" in error_of(data)
    data = base()
    data["axes"]["team"]["treshold"] = 0.5
    assert "axes.team.treshold: unknown key" in error_of(data)


def test_labels_that_cannot_be_topic_names_are_refused() -> None:
    data = base()
    data["axes"]["team"]["labels"]["Big Team"] = "x"
    assert "'Big Team'" in error_of(data)


def test_toml_file_and_unreadable_file(tmp_path: Path) -> None:
    toml = tmp_path / "t.toml"
    toml.write_text(
        '[axes.team]\nthreshold = 0.8\nlabels = { a = "A", b = "B" }\n\n'
        '[[routing]]\nname = "all"\nqueue = "q-{team}"\n'
    )
    assert load_taxonomy(toml).axes["team"].threshold == 0.8
    with pytest.raises(TaxonomyError, match="TAXONOMY_PATH: cannot read"):
        load_taxonomy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("axes: [unclosed")
    with pytest.raises(TaxonomyError, match="not valid YAML"):
        load_taxonomy(bad)


def test_fingerprint_changes_with_any_edit() -> None:
    data = base()
    before = parse_taxonomy(data).fingerprint()
    data["business_rules"].append("A new rule.")
    assert parse_taxonomy(data).fingerprint() != before


# -- duplicate keys (issue 11) ------------------------------------------------------------------------

TWO_AXES = """\
name: dup
axes:
  team:
    threshold: 0.7
    labels:
      billing: Money.
      product: The app.
  urgency:
    labels:
      high: Now.
      low: Later.
routing:
  - name: high
    when:
      urgency: high
    queue: "hot-{team}"
  - name: all
    queue: "{team}-{urgency}"
"""


def load_text(tmp_path: Path, text: str, name: str = "t.yaml") -> Taxonomy:
    file = tmp_path / name
    file.write_text(text)
    return load_taxonomy(file)


def error_loading(tmp_path: Path, text: str, name: str = "t.yaml") -> str:
    with pytest.raises(TaxonomyError) as caught:
        load_text(tmp_path, text, name)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_fixture_without_duplicates_loads(tmp_path: Path) -> None:
    taxonomy = load_text(tmp_path, TWO_AXES)
    assert taxonomy.axes["team"].labels == {"billing": "Money.", "product": "The app."}


@pytest.mark.parametrize(
    ("after", "inserted", "expected"),
    [
        (
            "      product: The app.\n",
            "      billing: Second description.\n",
            "t.yaml: axes.team.labels: duplicate key 'billing' on line 8 (first on line 6)",
        ),
        (
            "      low: Later.\n",
            "  team:\n    labels:\n      a: A.\n      b: B.\n",
            "t.yaml: axes: duplicate key 'team' on line 12 (first on line 3)",
        ),
        (
            "name: dup\n",
            "name: other\n",
            "t.yaml: top level: duplicate key 'name' on line 2 (first on line 1)",
        ),
        (
            "      urgency: high\n",
            "      urgency: low\n",
            "t.yaml: routing[0].when: duplicate key 'urgency' on line 16 (first on line 15)",
        ),
        (
            "    threshold: 0.7\n",
            "    threshold: 0.9\n",
            "t.yaml: axes.team: duplicate key 'threshold' on line 5 (first on line 4)",
        ),
    ],
    ids=["label", "axis", "top-level", "rule-when", "threshold"],
)
def test_a_key_written_twice_names_where_and_both_lines(
    tmp_path: Path, after: str, inserted: str, expected: str
) -> None:
    assert after in TWO_AXES
    message = error_loading(tmp_path, TWO_AXES.replace(after, after + inserted, 1))
    assert message.endswith(expected + "; each key may appear once")


def test_yaml_merge_keys_and_aliases_are_not_duplicates() -> None:
    text = "base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\nagain: *b\n"
    assert parse_yaml(text, "m.yaml") == {
        "base": {"x": 1, "y": 2},
        "use": {"x": 1, "y": 3},
        "again": {"x": 1, "y": 2},
    }


def test_keys_equal_after_parsing_are_duplicates() -> None:
    with pytest.raises(TaxonomyError) as caught:
        parse_yaml("a:\n  k: 1\n  'k': 2\n", "m.yaml")
    assert str(caught.value).startswith("m.yaml: a: duplicate key 'k' on line 3 (first on line 2)")


def test_toml_duplicates_are_refused_with_the_offending_line(tmp_path: Path) -> None:
    toml = (
        '[axes.team]\nthreshold = 0.8\n[axes.team.labels]\na = "A"\nb = "B"\na = "C"\n\n'
        '[[routing]]\nname = "all"\nqueue = "q-{team}"\n'
    )
    message = error_loading(tmp_path, toml, "t.toml")
    assert "t.toml: not valid TOML:" in message
    assert message.endswith('(at line 6, column 8): a = "C"')
    twice = '[axes.team]\nlabels = { a = "A", b = "B" }\n[axes.team]\nthreshold = 0.7\n'
    assert "Cannot declare ('axes', 'team') twice (at line 3" in error_loading(tmp_path, twice, "t.toml")


@pytest.mark.parametrize(
    "path", ["consumer/data/taxonomy.yaml", "deploy/k8s/taxonomy.yaml", "taxonomies/banking77.yaml"]
)
def test_shipped_taxonomies_have_no_duplicate_keys(path: str) -> None:
    taxonomy = load_taxonomy(ROOT / path)
    assert taxonomy.axes
    assert all(not axis.threshold_is_default for axis in taxonomy.axes.values())


# -- a missing threshold (issue 11) -----------------------------------------------------------------


def test_a_missing_threshold_is_the_documented_default_and_says_so() -> None:
    data = base()
    del data["axes"]["team"]["threshold"]
    taxonomy = parse_taxonomy(data)
    assert taxonomy.axes["team"].threshold == DEFAULT_THRESHOLD == 0.75
    assert taxonomy.axes["team"].threshold_is_default
    assert not taxonomy.axes["urgency"].threshold_is_default


def test_fingerprint_covers_the_effective_threshold() -> None:
    data = base()
    before = parse_taxonomy(data).fingerprint()
    assert data["axes"]["urgency"]["threshold"] != DEFAULT_THRESHOLD
    assert data["axes"]["team"]["threshold"] == DEFAULT_THRESHOLD
    without_urgency = copy.deepcopy(data)
    del without_urgency["axes"]["urgency"]["threshold"]
    assert parse_taxonomy(without_urgency).fingerprint() != before
    without_team = copy.deepcopy(data)
    del without_team["axes"]["team"]["threshold"]
    assert parse_taxonomy(without_team).fingerprint() == before  # same effective value, same prompt
    data["axes"]["team"]["threshold"] = 0.76
    assert parse_taxonomy(data).fingerprint() != before


# -- the command line -------------------------------------------------------------------------------


def taxonomy_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``ticket-router taxonomy check`` in a clean environment with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", "taxonomy", "check", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_cli_refuses_a_duplicate_label(tmp_path: Path) -> None:
    file = tmp_path / "dup.yaml"
    file.write_text(
        TWO_AXES.replace("      product: The app.\n", "      product: The app.\n      billing: B.\n")
    )
    assert one_error_line(taxonomy_check(str(file))) == (
        f"ticket-router: error: {file}: axes.team.labels: duplicate key 'billing' on line 8 "
        "(first on line 6); each key may appear once"
    )


def test_cli_blames_the_argument_for_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = taxonomy_check(str(missing), TAXONOMY_PATH=str(ROOT / "consumer" / "data" / "taxonomy.yaml"))
    assert one_error_line(done) == (
        f"ticket-router: error: taxonomy check: cannot read {missing}: No such file or directory"
    )


def test_cli_blames_taxonomy_path_when_the_variable_gave_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert one_error_line(taxonomy_check(TAXONOMY_PATH=str(missing))) == (
        f"ticket-router: error: TAXONOMY_PATH: cannot read {missing}: No such file or directory"
    )


def test_cli_marks_a_defaulted_threshold(tmp_path: Path) -> None:
    file = tmp_path / "t.yaml"
    file.write_text(TWO_AXES)
    done = taxonomy_check(str(file))
    assert done.returncode == 0, done.stderr
    assert "  team (threshold 0.7): billing, product\n" in done.stdout
    assert "  urgency (threshold 0.75, default): high, low\n" in done.stdout
