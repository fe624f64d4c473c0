"""The triage console's pure parts: password hashes, sessions and CSRF tokens, a decision's routing
and events, who wins when two people decide one record, the inbox's bounds and filters, the
overview's figures and charts, and the CONSOLE_* settings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from consumer.config import ConfigError, load_settings
from consumer.console.app import pending_text
from consumer.console.decide import (
    CLAIM_TIMEOUT_S,
    DecisionError,
    DoneMark,
    DoneState,
    chosen_labels,
    human_correction,
    human_route,
    human_routed_ticket,
    record_key,
    retake_at,
)
from consumer.console.inbox import (
    ROUTED_LOW_CONFIDENCE,
    Filter,
    Inbox,
    InboxItem,
    item_from_routed,
    item_from_triage,
    page_of,
    select,
)
from consumer.console.overview import RateSampler, bar_chart, figures
from consumer.console.passwords import (
    PasswordFormatError,
    check_password,
    check_user,
    hash_password,
    parse_users,
)
from consumer.console.reader import HumanRoute, human_route_of
from consumer.console.session import csrf_ok, csrf_token, new_session, read_session, session_cookie
from consumer.metrics import Metrics
from consumer.taxonomy import load_taxonomy
from schemas.corrections import CorrectionSource
from schemas.events import ErrorKind, SourcePosition
from tests.test_tools_cli import NOW, routed, ticket, triage

KEY = b"k" * 32
TAXONOMY = load_taxonomy()
LABELS = {"team": "billing", "ticket_type": "billing_dispute", "urgency": "high", "sentiment": "angry"}


# -- passwords -----------------------------------------------------------------------------------


def test_a_password_checks_against_its_hash_and_nothing_else() -> None:
    encoded = hash_password("correct horse")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse", encoded)
    assert not check_password("correct horsE", encoded)
    assert hash_password("correct horse") != encoded  # a fresh salt each time


def test_check_user_refuses_unknown_users_and_wrong_passwords() -> None:
    users = {"ana": hash_password("s3cret-pass")}
    assert check_user(users, "ana", "s3cret-pass")
    assert not check_user(users, "ana", "wrong")
    assert not check_user(users, "bob", "s3cret-pass")
    assert not check_user(users, "bob", "no such user")  # the dummy hash's own password


def test_console_users_entries_are_checked_and_errors_name_the_entry() -> None:
    ana = hash_password("pw-of-ana")
    assert parse_users(f"ana:{ana}, ") == {"ana": ana}
    for text, expected in [
        ("ana", "entry 1: expected name:hash"),
        (f"ana:{ana},ana:{ana}", "entry 2: user 'ana' is listed twice"),
        ("ana:plaintext", "entry 1 (ana): not scrypt$N$r$p$salt$hash"),
        (f"an a:{ana}", "entry 1: user name must be"),
        ("ana:scrypt$3$8$1$c2FsdHNhbHQ$aGFzaA", "entry 1 (ana): cost parameters out of range"),
    ]:
        with pytest.raises(PasswordFormatError, match=re.escape(expected)):
            parse_users(text)


def test_console_settings_name_the_variable_and_need_the_api_port() -> None:
    with pytest.raises(ConfigError, match=r"^CONSOLE_USERS: entry 1 \(ana\): not scrypt"):
        load_settings(console_users="ana:secret", api_port=0, api_tokens="a:token-0123456789abcdef")
    with pytest.raises(ConfigError, match="served on the API's port"):
        load_settings(console_trusted_header="X-Forwarded-User")
    settings = load_settings(
        console_users=f"ana:{hash_password('x')}", api_port=0, api_tokens="a:token-0123456789abcdef"
    )
    assert settings.console_enabled and settings.console_cookie_secure


# -- sessions and CSRF ---------------------------------------------------------------------------


def test_a_session_cookie_round_trips_and_refuses_forgery_and_expiry() -> None:
    session = new_session("ana", now=1_000.0, ttl_s=60)
    cookie = session_cookie(session, KEY)
    assert read_session(cookie, KEY, now=1_030.0) == session
    assert read_session(cookie, KEY, now=1_061.0) is None  # expired
    assert read_session(cookie, b"x" * 32, now=1_030.0) is None  # another key
    payload, mac = cookie.split(".")
    forged = session_cookie(new_session("admin", 1_000.0, 60, nonce=session.nonce), b"guess" * 8)
    assert read_session(forged.split(".")[0] + "." + mac, KEY, 1_030.0) is None
    assert read_session(payload, KEY, 1_030.0) is None
    assert read_session("", KEY, 1_030.0) is None and read_session(None, KEY, 1_030.0) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    one, other = new_session("ana", 0, 60), new_session("ana", 0, 60)
    token = csrf_token(one.nonce, KEY)
    assert csrf_ok(one.nonce, token, KEY)
    assert not csrf_ok(other.nonce, token, KEY)
    assert not csrf_ok(one.nonce, "", KEY) and not csrf_ok(one.nonce, None, KEY)
    assert not csrf_ok(None, token, KEY)


# -- a decision ----------------------------------------------------------------------------------


def form_of(labels: dict[str, str]) -> dict[str, str]:
    return {f"label.{axis}": label for axis, label in labels.items()}


def test_a_decision_is_routed_by_the_taxonomy_rules_and_refuses_labels_it_lacks() -> None:
    labels = chosen_labels(form_of(LABELS), TAXONOMY)
    assert human_route(TAXONOMY, labels).queue == "priority-billing"  # angry and high
    critical = chosen_labels(form_of(LABELS | {"team": "security", "urgency": "critical"}), TAXONOMY)
    assert (human_route(TAXONOMY, critical).queue, human_route(TAXONOMY, critical).rule) == (
        "urgent-security",
        "critical-security",
    )
    with pytest.raises(DecisionError, match=r"axis 'team': choose one of billing, infrastructure"):
        chosen_labels(form_of(LABELS | {"team": "finance"}), TAXONOMY)
    with pytest.raises(DecisionError, match="axis 'sentiment'"):
        chosen_labels(form_of({k: v for k, v in LABELS.items() if k != "sentiment"}), TAXONOMY)


def test_a_decision_publishes_a_routed_ticket_by_a_named_human_and_a_triage_correction() -> None:
    event = ticket(7)
    decision = human_route(TAXONOMY, LABELS)
    source = SourcePosition(topic="tickets", partition=2, offset=41)
    routed_ticket = human_routed_ticket(event, LABELS, decision, "ana", source, ("p1", "r1"), NOW)
    assert routed_ticket.model_used == "human:ana" and routed_ticket.tiers_tried == ["human"]
    assert routed_ticket.queue == "priority-billing" and routed_ticket.rule == "angry-and-high"
    assert {axis: p.label for axis, p in routed_ticket.classification.axes.items()} == LABELS
    assert "ana" in routed_ticket.classification.routing_reason and routed_ticket.source == source
    correction = human_correction(event, LABELS, "ana", NOW)
    assert (correction.source, correction.actor, correction.event_id) == (
        CorrectionSource.TRIAGE,
        "ana",
        event.event_id,
    )
    assert correction.labels == LABELS and correction.body == event.body


def mark(record: str, mark_id: str, actor: str, state: str = "claimed") -> DoneMark:
    return DoneMark.model_validate(
        {
            "record": record,
            "state": state,
            "mark_id": mark_id,
            "actor": actor,
            "labels": {},
            "queue": "q",
            "at": NOW,
        }
    )


def test_the_first_claim_of_a_record_wins_on_every_replica() -> None:
    key = record_key("triage", 0, 5)
    marks = [mark(key, "a", "ana"), mark(key, "b", "bob"), mark(key, "a", "ana", "published")]
    for replica in (DoneState(), DoneState()):  # every replica folds the partition in the same order
        verdicts = [replica.fold(m) for m in marks]
        assert [v.won for v in verdicts] == [True, False, True]
        assert verdicts[1].repair is None  # bob lost to a claim: ana's published mark still follows
        assert replica.get(key) == marks[2]


def test_a_claim_after_the_published_mark_loses_and_repairs_the_compacted_key() -> None:
    key = record_key("triage", 0, 5)
    state = DoneState()
    published = mark(key, "a", "ana", "published")
    state.fold(mark(key, "a", "ana"))
    state.fold(published)
    late = state.fold(mark(key, "b", "bob"))
    assert not late.won and late.repair == published  # written after bob's claim: the last record wins
    assert state.fold(published).won and state.get(key) == published
    # After compaction only the repair copy is left, and it says the same thing.
    compacted = DoneState()
    assert compacted.fold(published).won and compacted.get(key) == published


def at(claim: DoneMark, seconds: float) -> DoneMark:
    return claim.model_copy(update={"at": NOW + timedelta(seconds=seconds)})


def test_an_unconfirmed_claim_can_be_taken_over_only_after_the_claim_timeout() -> None:
    key = record_key("triage", 0, 6)
    first = mark(key, "a", "ana")
    early, late = at(mark(key, "b", "bob"), CLAIM_TIMEOUT_S - 1), at(mark(key, "c", "cy"), CLAIM_TIMEOUT_S)
    for replica in (DoneState(), DoneState()):  # judged by the marks' own times: one answer everywhere
        verdicts = [replica.fold(m) for m in (first, early, late)]
        assert [v.won for v in verdicts] == [True, False, True]
        assert verdicts[1].superseded is None and verdicts[2].superseded == first
        assert replica.get(key) == late
    assert retake_at(first) == NOW + timedelta(seconds=CLAIM_TIMEOUT_S)


def test_a_late_confirmation_settles_a_taken_over_record_and_nothing_takes_a_published_one() -> None:
    key = record_key("triage", 0, 7)
    state = DoneState()
    state.fold(mark(key, "a", "ana"))
    state.fold(at(mark(key, "b", "bob"), CLAIM_TIMEOUT_S))  # bob takes the stale claim over
    ana_published = at(mark(key, "a", "ana", "published"), CLAIM_TIMEOUT_S + 1)
    assert state.fold(ana_published).won and state.get(key) == ana_published  # ana did publish
    bob_published = at(mark(key, "b", "bob", "published"), CLAIM_TIMEOUT_S + 2)
    assert not state.fold(bob_published).won and state.get(key) == ana_published
    much_later = state.fold(at(mark(key, "c", "cy"), 10 * CLAIM_TIMEOUT_S))
    assert not much_later.won and much_later.superseded is None and much_later.repair == ana_published


def test_a_route_a_person_decided_is_recognised_on_its_queue_and_a_model_s_is_not() -> None:
    decision = human_route(TAXONOMY, LABELS)
    source = SourcePosition(topic="tickets", partition=0, offset=1)
    by_ana = human_routed_ticket(ticket(1), LABELS, decision, "ana", source, ("p", "r"), NOW)
    assert human_route_of(by_ana) == HumanRoute(decision.queue, "ana", LABELS)
    assert human_route_of(routed(1, "billing-normal")) is None


def test_a_pending_decision_says_it_was_published_and_must_not_be_repeated() -> None:
    assert pending_text("priority-billing").startswith("The ticket was routed to priority-billing and")
    assert pending_text(None).startswith("The correction was published.")
    assert "do not decide it again" in pending_text(None)


# -- the inbox -----------------------------------------------------------------------------------


def test_the_inbox_keeps_at_most_its_capacity_and_drops_the_oldest() -> None:
    inbox = Inbox(capacity=3)
    for offset in range(5):
        inbox.add(item_from_triage("triage", 0, offset, triage(offset, ErrorKind.LLM_UNAVAILABLE)))
    assert [item.offset for item in inbox.items()] == [2, 3, 4] and inbox.dropped == 2


def test_items_hold_the_reason_the_partial_classification_and_whether_a_person_can_route_them() -> None:
    item = item_from_triage("triage", 1, 9, triage(3, ErrorKind.LOW_CONFIDENCE))
    assert (item.category, item.ticket_id, item.decidable, item.key) == (
        "low_confidence",
        "T-0003",
        True,
        "triage/1/9",
    )
    broken = item_from_triage("triage", 1, 10, triage(4, ErrorKind.MALFORMED_JSON, original=b"{nope"))
    assert not broken.decidable and broken.ticket_id == "T-0004"
    flagged = item_from_routed("q.billing-normal", 0, 3, routed(5, "billing-normal"))
    assert flagged.category == ROUTED_LOW_CONFIDENCE and flagged.queue == "billing-normal"
    assert next((a.name, a.label, a.confidence) for a in flagged.axes) == ("team", "billing", 0.91)


def aged(offset: int, kind: ErrorKind, hours: float) -> InboxItem:
    record = triage(offset, kind).model_copy(update={"triaged_at": NOW - timedelta(hours=hours)})
    return item_from_triage("triage", 0, offset, record)


def test_the_filter_keeps_kinds_and_ages_newest_first_and_hides_decided_records() -> None:
    items = [
        aged(1, ErrorKind.LLM_UNAVAILABLE, 0.5),
        aged(2, ErrorKind.LOW_CONFIDENCE, 0.2),
        aged(3, ErrorKind.LLM_UNAVAILABLE, 30),
        aged(4, ErrorKind.LLM_UNAVAILABLE, 0.1),
    ]
    done = DoneState()
    done.fold(mark(items[3].key, "m", "ana", "published"))
    kept = select(items, Filter(frozenset({"llm_unavailable"}), "1h"), NOW, done)
    assert [item.offset for item in kept] == [1]
    everything = select(items, Filter(show_decided=True), NOW, done)
    assert [item.offset for item in everything] == [4, 2, 1, 3]
    claimed = DoneState()
    claimed.fold(mark(items[3].key, "m", "ana"))  # claimed only: still shown, it is not confirmed
    assert len(select(items, Filter(), NOW, claimed)) == 4


def test_pages_are_clamped_and_counted() -> None:
    items = [aged(n, ErrorKind.INTERNAL, n) for n in range(7)]
    assert page_of(items, 2, 3) == (items[3:6], 3)
    assert page_of(items, 99, 3) == (items[6:], 3)
    assert page_of([], 1, 3) == ([], 1)


# -- the overview --------------------------------------------------------------------------------


def test_figures_come_from_the_metrics_registry() -> None:
    metrics = Metrics()
    metrics.routed.labels("billing-normal", "default").inc(8)
    metrics.routed.labels("urgent-security", "critical-security").inc(2)
    metrics.final_tier.labels("local").inc(6)
    metrics.final_tier.labels("fast").inc(4)
    metrics.triaged.labels("llm_unavailable").inc(2)
    metrics.console_decisions.labels("routed").inc(1)
    metrics.corrections.labels("team", "billing", "product", "triage").inc(1)
    metrics.llm_cost.labels("claude-haiku-5-5").inc(0.012)
    shown = figures(metrics)
    assert shown.routed_by_queue == {"billing-normal": 8, "urgent-security": 2}
    assert shown.decided_by == {"local": 6, "fast": 4, "human": 1, "triage": 2}
    assert shown.correction_rate == pytest.approx(0.1)
    assert shown.cost_per_10k == pytest.approx(0.012 / 12 * 10_000)
    assert figures(Metrics()).correction_rate is None


def test_rates_and_charts() -> None:
    sampler = RateSampler()
    sampler.sample(0.0, {"billing-normal": 10})
    sampler.sample(5.0, {"billing-normal": 11})  # too soon: not kept
    sampler.sample(60.0, {"billing-normal": 40})
    assert sampler.per_minute() == {"billing-normal": 30.0}
    svg = bar_chart([("<b>", 2.0), ("b", 1.0)], "t & t")
    assert svg.count("<rect") == 2 and "&lt;b&gt;" in svg and "t &amp; t" in svg
    assert 'width="220"' in svg and 'width="110"' in svg  # scaled to the largest
    assert "nothing yet" in bar_chart([], "empty")


def test_a_ticket_from_now_is_newer_than_one_from_an_hour_ago() -> None:
    now = datetime.now(UTC)
    assert select([aged(1, ErrorKind.INTERNAL, 1)], Filter(age="1h"), now, DoneState()) == []
