"""The per-ticket retrieval the Claude tiers use, over the real example store."""

from __future__ import annotations

import pytest

from consumer.classify.claude import load_examples
from consumer.classify.prompt import Example
from consumer.learn.dense import EncoderUnavailable
from consumer.learn.retriever import RECENT, build_retriever
from consumer.taxonomy import load_taxonomy
from schemas.events import TicketEvent

TAXONOMY = load_taxonomy()
EXAMPLES = load_examples()


def event(event_id: str, subject: str, body: str) -> TicketEvent:
    return TicketEvent.model_validate(
        {
            "event_id": event_id,
            "event_type": "ticket.created",
            "ticket_id": f"T-{event_id}",
            "subject": subject,
            "body": body,
            "account_tier": "pro",
            "customer_id": "C-1",
            "channel": "web",
            "created_at": "2026-11-30T09:00:00Z",
        }
    )


def test_a_ticket_equal_to_an_example_retrieves_it_first_with_its_labels() -> None:
    retriever = build_retriever(EXAMPLES, TAXONOMY, 5, 0.1)
    assert retriever is not None
    example = EXAMPLES[3]
    found = retriever(event("E-1", example.subject, example.body))
    assert 1 <= len(found) <= 5
    assert found[0][0].example_id == example.example_id and found[0][1] > 0.99
    assert [similarity for _, similarity in found] == sorted((s for _, s in found), reverse=True)
    assert all(similarity >= 0.1 for _, similarity in found)
    assert f"k=5;per_label=0;floor=0.1;{retriever.store.name}" == retriever.signature


def test_a_per_label_limit_shows_more_labels_and_is_part_of_the_signature() -> None:
    plain = build_retriever(EXAMPLES, TAXONOMY, 5, 0.0)
    diverse = build_retriever(EXAMPLES, TAXONOMY, 5, 0.0, per_label=1)
    assert plain is not None and diverse is not None
    ticket = event("E-3", "Refund", "I was charged twice for my subscription this month.")

    def combinations(found: list[tuple[Example, float]]) -> list[tuple[str, ...]]:
        return [tuple(sorted(example.labels.values())) for example, _ in found]

    assert len(set(combinations(diverse(ticket)))) == len(diverse(ticket)) == 5
    assert len(set(combinations(plain(ticket)))) < 5, "the plain nearest repeat a label combination here"
    assert diverse.signature != plain.signature and "per_label=1" in diverse.signature


def test_retrieval_off_or_nothing_labeled_gives_no_retriever() -> None:
    assert build_retriever(EXAMPLES, TAXONOMY, 0, 0.1) is None
    unlabeled = [type(EXAMPLES[0])("x", "s", "b", {"team": "not-a-team"})]
    assert build_retriever(unlabeled, TAXONOMY, 5, 0.1) is None


def test_retrieval_off_loads_no_encoder() -> None:
    """An encoder name that cannot load shows it is not even tried when there is no store to build."""
    assert build_retriever(EXAMPLES, TAXONOMY, 0, 0.1, dense="not-an-encoder") is None
    with pytest.raises(EncoderUnavailable, match="DENSE_ENCODER: unknown encoder 'not-an-encoder'"):
        build_retriever(EXAMPLES, TAXONOMY, 5, 0.1, dense="not-an-encoder")


def test_an_escalated_ticket_is_answered_from_the_recent_ones() -> None:
    retriever = build_retriever(EXAMPLES, TAXONOMY, 3, 0.0)
    assert retriever is not None
    ticket = event("E-2", "Refund", "I was charged twice for my subscription this month.")
    first = retriever(ticket)
    assert retriever(ticket) is first, "the strong tier gets the fast tier's examples without a search"
    for number in range(RECENT):
        retriever(event(f"E-other-{number}", "Hi", f"question number {number}"))
    assert retriever(ticket) is not first and retriever(ticket) == first, "bounded: searched again"
