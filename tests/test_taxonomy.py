"""A bad taxonomy fails at load with one line naming the key and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from consumer.taxonomy import TaxonomyError, load_taxonomy, parse_taxonomy


def base() -> dict[str, Any]:
    return yaml.safe_load((Path(__file__).parents[1] / "consumer" / "data" / "taxonomy.yaml").read_text())


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
