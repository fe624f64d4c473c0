"""The README is the user's manual: it must list every setting and open with the two commands."""

from __future__ import annotations

from pathlib import Path

from consumer.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_readme_opens_with_make_run_and_make_test() -> None:
    opening = "\n".join(README.splitlines()[:10])
    assert "make run" in opening and "make test" in opening


def test_every_setting_is_documented_in_the_configuration_table() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"| `{name.upper()}` |" not in README]
    assert missing == []
