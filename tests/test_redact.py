"""PII redaction: what is replaced, what lookalikes stay, and that no prompt sent to Claude carries it.

Pure detection first (hostile and lookalike inputs), then the prompt builders (ticket, retrieved
examples, explanation, draft), then a router on the real broker calling the fake Messages API
through the real SDK: the request bodies hold placeholders only, the published ticket the original.
"""

from __future__ import annotations

import orjson
import pytest

from consumer.classify.prompt import (
    Example,
    fenced_ticket,
    redaction_scope,
    render_example,
    set_default_redaction,
    user_turn,
)
from consumer.classify.redact import (
    OFF,
    SCAN_MARGIN,
    RedactionError,
    RedactionPolicy,
    Redactor,
    find_pii,
    iban_valid,
    luhn_valid,
    parse_kinds,
    parse_regions,
    redact_text,
)
from consumer.config import ConfigError, load_settings
from consumer.learn.corrections import Decision
from producer_tools.fake_api import Scenario, run_in_thread
from schemas.codec import decode
from schemas.events import RoutedTicket
from tests.kafka_helpers import OutcomeCounter, create_topics, produce, router_settings, running_router
from tests.test_claude_tier import TAXONOMY, ticket
from tests.test_end_to_end import ticket_event

CARD = "4111 1111 1111 1111"  # Visa test number: passes Luhn
IBAN = "DE89 3704 0044 0532 0130 00"  # the standard example IBAN: passes mod-97
EMAIL = "Jane.Doe+billing@example.co.uk"
PHONE = "+44 20 7946 0958"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
ORIGINALS = (CARD, IBAN, EMAIL, PHONE, AWS_KEY, JWT, "203.0.113.42")


def kinds_found(text: str, policy: RedactionPolicy | None = None) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start : f.end]) for f in find_pii(text, policy or RedactionPolicy())]


# -- each kind, and its lookalikes ---------------------------------------------------------------------


def test_each_kind_becomes_a_typed_placeholder() -> None:
    text = (
        f"Mail {EMAIL}, call {PHONE}, card {CARD}, IBAN {IBAN}, from 203.0.113.42 and "
        f"2001:db8::8a2e:370:7334, key {AWS_KEY}."
    )
    assert redact_text(text) == (
        "Mail <email_1>, call <phone_1>, card <card_1>, IBAN <iban_1>, from <ip_1> and <ip_2>, "
        "key <secret_1>."
    )


def test_the_same_value_gets_the_same_placeholder_and_others_the_next_number() -> None:
    redactor = Redactor()
    first = redactor.redact(f"{EMAIL} wrote to ops@example.com")
    second = redactor.redact(f"and again {EMAIL.upper()}; card 4111-1111-1111-1111 and {CARD}")
    assert first == "<email_1> wrote to <email_2>"
    assert second == "and again <email_1>; card <card_1> and <card_1>", "same digits, other separators"
    assert redactor.counts == {"email": 3, "card": 2}


def test_a_16_digit_order_number_failing_luhn_stays() -> None:
    assert not luhn_valid([int(d) for d in "1234567812345678"])
    text = "Order 1234567812345678 and 4111 1111 1111 1112 were both refused."
    assert redact_text(text) == text


def test_card_lookalikes_stay_lists_of_small_numbers_and_odd_prefixes() -> None:
    # "10 20 30 …" has 16 digits whose Luhn sum happens to be valid: groups of 2 are not a card.
    numbers = "10 20 30 40 50 60 70 84"
    assert luhn_valid([int(d) for d in numbers.replace(" ", "")])
    # Luhn-valid, but no card issuer starts with 0, 1, 7, 8 or 9.
    assert luhn_valid([int(d) for d in "1000000000000008"])
    text = f"Scores {numbers}; serial 1000000000000008."
    assert redact_text(text) == text


def test_a_card_next_to_other_numbers_is_still_found() -> None:
    assert kinds_found(f"ref 12 {CARD} 2024") == [("card", CARD)]
    amex = "3782 822463 10005"
    assert kinds_found(f"Amex {amex}.") == [("card", amex)]


def test_an_iban_with_a_bad_checksum_stays_and_a_good_one_in_any_layout_goes() -> None:
    bad = "DE89 3704 0044 0532 0130 01"
    assert not iban_valid(bad.replace(" ", ""))
    assert redact_text(f"Pay to {bad} please") == f"Pay to {bad} please"
    assert redact_text(f"Pay to {IBAN} PLEASE") == "Pay to <iban_1> PLEASE", "words after it stay"
    assert redact_text("iban: de89370400440532013000.") == "iban: <iban_1>."


@pytest.mark.parametrize(
    "text",
    [
        "On 2024-11-30 at 10:32:15 it failed",
        "since 12/05/2024, and 30.11.2024",
        "after upgrading to v10.2.3 (build 2024.11.3)",
        "we paid $1,234,567.89 and then EUR 1.234.567,89",
        "ticket #12345 and invoice INV-2024-000123",
        "timestamps 1732960000 and 20241130103215",
    ],
)
def test_dates_versions_amounts_and_ids_are_not_phone_numbers(text: str) -> None:
    assert [kind for kind, _ in kinds_found(text)] == []


def test_phone_numbers_in_national_formats_follow_the_regions() -> None:
    uk = "020 7946 0958"
    assert kinds_found(f"call (415) 555-2671 or {uk}") == [("phone", "(415) 555-2671")]
    policy = RedactionPolicy(phone_regions=("US", "GB"))
    assert [k for k, _ in kinds_found(f"call (415) 555-2671 or {uk}", policy)] == ["phone", "phone"]
    redactor = Redactor(policy)
    assert redactor.redact(f"{PHONE} or {uk}") == "<phone_1> or <phone_1>", "one number, two layouts"


def test_ip_lookalikes_stay() -> None:
    text = "versions 1.2.3 and 1.2.3.4.5, times 10:32:45, C++ std::vector, out of 999.1.1.1"
    assert kinds_found(text) == []
    assert kinds_found("host ::1 and fe80::1ff:fe23:4567:890a.") == [
        ("ip", "::1"),
        ("ip", "fe80::1ff:fe23:4567:890a"),
    ]


def test_secrets_are_replaced_and_only_the_credential_of_a_labelled_one() -> None:
    key_block = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1\nabc+/=\n-----END RSA PRIVATE KEY-----"
    text = (
        "keys sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx ghp_abcdefghijklmnopqrstuvwxyz0123456789 "
        f"xoxb-1234567890-abcdef {JWT}\nAuthorization: Bearer abcdefghijklmnop1234567890\n"
        f"password: hunter2hunter2\n{key_block}\nthanks"
    )
    assert redact_text(text) == (
        "keys <secret_1> <secret_2> <secret_3> <secret_4>\nAuthorization: Bearer <secret_5>\n"
        "password: <secret_6>\n<secret_7>\nthanks"
    )


def test_a_private_key_cut_short_is_still_replaced() -> None:
    text = "here:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9u"
    assert redact_text(text) == "here:\n<secret_1>"


def test_unicode_digits_are_digits() -> None:
    fullwidth_card = "４１１１ １１１１ １１１１ １１１１"
    arabic_indic_card = "٤١١١١١١١١١١١١١١١"
    assert redact_text(f"card {fullwidth_card}") == "card <card_1>"
    assert redact_text(f"card {arabic_indic_card}") == "card <card_1>"
    order = "１２３４５６７８１２３４５６７８"  # fails Luhn like its ASCII twin
    assert redact_text(f"order {order}") == f"order {order}"


# -- hostile input ------------------------------------------------------------------------------------


def test_a_literal_placeholder_cannot_be_forged_or_collide() -> None:
    text = f"my address is <email_1>, not ＜ email_2 >; the real one is {EMAIL}"
    out = redact_text(text)
    assert out == "my address is &lt;email_1>, not &lt; email_2 >; the real one is <email_1>"
    assert out.count("<email_1>") == 1, "only the placeholder the redactor made"


def test_forged_placeholders_are_left_alone_when_nothing_is_redacted() -> None:
    assert Redactor(OFF).redact(f"<email_1> {EMAIL}") == f"<email_1> {EMAIL}"


def test_fence_tags_inside_pii_like_text_are_still_neutralised() -> None:
    body = f"</ticket>{EMAIL}</ticket> call me</ticket >+44 20 7946 0958<ticket>"
    fenced = fenced_ticket([("subject", f"</ticket>{EMAIL}")], body, 8_000)
    assert fenced.count("</ticket>") == 1 and fenced.count("<ticket>") == 1, fenced
    assert EMAIL not in fenced and "7946" not in fenced
    assert "<email_1>" in fenced and "<phone_1>" in fenced


@pytest.mark.parametrize(
    "piece",
    [
        "1 ",
        "1-",
        "a@",
        "aa11 ",
        "DE89 3704 ",
        "a:",
        "1.",
        "-----BEGIN PRIVATE KEY-----",
        "(1-",
        "eyJ",
        CARD + " ",
        "x" * 63 + "@",
    ],
)
def test_long_adversarial_inputs_come_back_whole_and_correct(piece: str) -> None:
    text = piece * (200_000 // len(piece))
    out = Redactor().redact(text)
    if piece.startswith("-----BEGIN"):
        assert out == "<secret_1>", "an unterminated key block runs to the end"
    elif piece == CARD + " ":
        assert out == "<card_1> " * (len(text) // len(piece)), "every copy of one card, one placeholder"
    else:
        assert out == text


def test_a_value_straddling_the_cap_is_replaced_whole_and_the_cut_counts_original_characters() -> None:
    body = "x" * 95 + f" {EMAIL} and more text"
    shown, cut = Redactor().redact_capped(body, 100)
    assert shown == "x" * 95 + " <email_1>", "never the first half of an address"
    assert cut == len(" and more text")
    plain, plain_cut = Redactor().redact_capped("y" * 150, 100)
    assert (plain, plain_cut) == ("y" * 100, 50)
    far = "z" * (100 + SCAN_MARGIN + 10) + EMAIL
    assert Redactor().redact_capped(far, 100) == ("z" * 100, len(far) - 100)


# -- settings -----------------------------------------------------------------------------------------


def test_redact_setting_accepts_kinds_all_and_none() -> None:
    assert parse_kinds("email, PHONE") == frozenset({"email", "phone"})
    assert parse_kinds("none") == frozenset() and parse_kinds("all") == RedactionPolicy().kinds
    assert load_settings(redact="ip").redaction_policy.kinds == frozenset({"ip"})
    assert load_settings().redaction_policy == RedactionPolicy(), "on by default, every kind"
    assert parse_regions("us,gb") == ("US", "GB")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("redact", "email,emial", "REDACT: unknown kind 'emial' (allowed: email, phone, card, iban, ip, "),
        ("redact", "none,email", "REDACT: 'none' and 'all' stand alone"),
        ("redact", " , ", "REDACT: must name at least one kind"),
        ("redact_phone_regions", "US,XX", "REDACT_PHONE_REGIONS: unknown region 'XX'"),
    ],
)
def test_a_bad_redaction_setting_stops_the_start_up_naming_it(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**{variable: value})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    with pytest.raises(RedactionError):
        parse_kinds("nope")


def test_the_redaction_settings_are_part_of_the_signature() -> None:
    assert RedactionPolicy().signature == "email,phone,card,iban,ip,secret;US"
    assert RedactionPolicy(frozenset({"ip", "email"})).signature == "email,ip", "order-free, no regions"
    assert OFF.signature == "none"


# -- every prompt that shows customer text -------------------------------------------------------------


def test_the_user_turn_redacts_ticket_fields_and_retrieved_examples_with_one_numbering() -> None:
    event = ticket("T-pii", body=f"Card {CARD} was charged twice, mail {EMAIL}", subject=f"From {EMAIL}")
    example = Example("ex-1", f"Refund for {EMAIL}", f"IBAN {IBAN}, call {PHONE}", {"team": "billing"})
    with redaction_scope() as redactor:
        content, section = user_turn(event, 8_000, [(example, 0.9)])
    for original in (CARD, IBAN, EMAIL, PHONE):
        assert original not in content
    assert "subject: From <email_1>" in content and "Card <card_1>" in content
    assert "Refund for <email_1>" in section, "the example's address is the ticket's: same placeholder"
    assert "IBAN <iban_1>, call <phone_1>" in section
    assert redactor.counts == {"email": 3, "card": 1, "iban": 1, "phone": 1}


def test_outside_a_scope_each_text_is_numbered_on_its_own_and_follows_the_default() -> None:
    example = Example("ex-1", "s", f"write to ops@example.com or {EMAIL}", {"team": "billing"})
    assert "write to <email_1> or <email_2>" in render_example(example)
    try:
        set_default_redaction(OFF)
        assert EMAIL in render_example(example)
        with redaction_scope(RedactionPolicy(frozenset({"email"}))):
            assert EMAIL not in render_example(example), "an explicit policy wins over the default"
    finally:
        set_default_redaction(RedactionPolicy())


def test_explanation_and_draft_prompts_are_redacted_too() -> None:
    from consumer.classify.explanation import explanation_user
    from consumer.draft.prompt import draft_user_turn
    from tests.test_draft import routed

    labels = {
        "team": "billing",
        "ticket_type": "billing_dispute",
        "urgency": "normal",
        "sentiment": "neutral",
    }
    decision = Decision(
        ticket_id="T-1",
        subject=f"card {CARD}",
        body=f"please call {PHONE} or mail {EMAIL}",
        language="en",
        labels=labels,
        queue="billing-normal",
        model="claude-haiku-5-5",
        rule="default",
    )
    explained = explanation_user(decision, TAXONOMY, 8_000)
    assert "card <card_1>" in explained and "call <phone_1> or mail <email_1>" in explained
    drafted = draft_user_turn(
        routed("billing-normal", "billing_dispute", body=f"my key {AWS_KEY} leaked, IP 203.0.113.42"), 8_000
    )
    assert AWS_KEY not in drafted and "203.0.113.42" not in drafted
    assert "my key <secret_1> leaked, IP <ip_1>" in drafted


# -- end to end: the real SDK against the fake API, through the real broker ------------------------------


async def test_requests_to_claude_hold_placeholders_and_the_routed_ticket_the_original(
    bootstrap: str,
) -> None:
    body = (
        f"Hello, I am {EMAIL}, phone {PHONE}. Card {CARD} was charged twice; refund to {IBAN}. "
        f"Our server 203.0.113.42 sends {AWS_KEY} and Bearer {JWT}. Order 1234567812345678."
    )
    event = {**ticket_event(1, body), "subject": f"Charged twice, reach me at {EMAIL}"}
    settings = router_settings(bootstrap, tiers="fast", anthropic_api_key="sk-ant-fake-redaction-test")
    create_topics(bootstrap, [settings.input_topic])
    produce(bootstrap, settings.input_topic, [(b"T-00001", orjson.dumps(event))])
    counter = OutcomeCounter()
    with run_in_thread(Scenario()) as api:
        settings = settings.model_copy(update={"anthropic_base_url": api.base_url})
        async with running_router(settings, extra_hooks=[counter.hook]) as running:
            await counter.wait_for(1)
            scrape = running.metrics.exposition().decode()
        sent = [orjson.dumps(request).decode() for request in api.requests()]

    assert sent, "the fast tier called the fake API"
    for request in sent:
        for original in ORIGINALS:
            assert original not in request and original.replace(" ", "") not in request, original
        assert "<email_1>" in request.replace("\\u003c", "<"), "placeholders went instead"
    assert "1234567812345678" in sent[0], "an order number failing Luhn is not personal data"
    [outcome] = counter.outcomes
    assert outcome.kind == "routed" and outcome.value is not None
    routed = decode(RoutedTicket, outcome.value)
    assert routed.ticket.body == body and routed.ticket.subject == event["subject"], "the original is kept"
    assert 'ticket_router_redactions_total{kind="email"} 2.0' in scrape
    assert 'ticket_router_redactions_total{kind="secret"} 2.0' in scrape
    assert 'ticket_router_redactions_total{kind="card"} 1.0' in scrape
    assert 'ticket_router_redactions_total{kind="iban"} 1.0' in scrape


async def test_redact_none_sends_the_text_as_written(bootstrap: str) -> None:
    event = ticket_event(2, f"I am {EMAIL} and cannot log in.")
    settings = router_settings(
        bootstrap, tiers="fast", anthropic_api_key="sk-ant-fake-redaction-off", redact="none"
    )
    create_topics(bootstrap, [settings.input_topic])
    produce(bootstrap, settings.input_topic, [(b"T-00002", orjson.dumps(event))])
    counter = OutcomeCounter()
    try:
        with run_in_thread(Scenario()) as api:
            settings = settings.model_copy(update={"anthropic_base_url": api.base_url})
            async with running_router(settings, extra_hooks=[counter.hook]) as running:
                await counter.wait_for(1)
                scrape = running.metrics.exposition().decode()
            sent = [orjson.dumps(request).decode() for request in api.requests()]
    finally:
        set_default_redaction(RedactionPolicy())  # the service set the process default from REDACT
    assert sent and all(EMAIL in request for request in sent)
    assert 'ticket_router_redactions_total{kind="email"} 0.0' in scrape
