"""``ticket-tools costs``: the README's cost table, measured through the fake Messages API."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from producer_tools.cli import main


def test_costs_compare_pairs_modes_and_caching(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "--tickets", "30", "--escalation-rate", "0.15", "--json"]) == 0
    runs: list[dict[str, Any]] = orjson.loads(capsys.readouterr().out)
    by_key = {(run["fast_model"], run["mode"], run["cached"]): run for run in runs}
    assert len(by_key) == len(runs) == 12
    for (fast, mode, cached), run in by_key.items():
        assert run["tickets"] == 30
        assert run["strong_share"] == {"fast only": 0.0, "strong only": 1.0, "cheap first": 0.15}[mode]
        if cached:
            assert run["tokens_per_ticket"]["cache_read"] > 0
            assert run["usd_per_10k"] < by_key[(fast, mode, False)]["usd_per_10k"], "caching saves"
        else:
            assert run["tokens_per_ticket"]["cache_read"] == 0
        if mode == "cheap first":
            fast_only, strong_only = (
                by_key[(fast, "fast only", cached)],
                by_key[(fast, "strong only", cached)],
            )
            expected = fast_only["usd_per_10k"] + 0.15 * strong_only["usd_per_10k"]
            assert run["usd_per_10k"] == pytest.approx(expected)
            assert run["usd_per_10k"] < strong_only["usd_per_10k"], "cheap first is cheaper"
    today = by_key[("claude-haiku-5-5", "cheap first", True)]
    before = by_key[("claude-haiku-4-5", "cheap first", True)]
    assert today["usd_per_10k"] < before["usd_per_10k"]


@pytest.mark.parametrize(("flag", "value"), [("--tickets", "0"), ("--escalation-rate", "1.5")])
def test_costs_rejects_bad_flags_in_one_line(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["costs", flag, value])
    assert caught.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()[-1]) > 0
