"""Is a ticket in English? Decides whether it may skip the cheap tiers (NON_ENGLISH_TO_STRONG).

The producer's ``language`` hint wins when present. Otherwise lingua guesses from the text,
restricted to the languages support actually receives, which keeps it fast and its memory small;
a guess it is unsure of counts as English, so only clearly foreign tickets skip tiers.
"""

from __future__ import annotations

from lingua import Language, LanguageDetectorBuilder

from schemas.events import TicketEvent

DETECTED_LANGUAGES = (
    Language.ENGLISH,
    Language.SPANISH,
    Language.FRENCH,
    Language.GERMAN,
    Language.PORTUGUESE,
    Language.ITALIAN,
    Language.DUTCH,
    Language.JAPANESE,
    Language.CHINESE,
    Language.KOREAN,
    Language.RUSSIAN,
    Language.POLISH,
)
SAMPLE_CHARS = 600


class EnglishDetector:
    def __init__(self, min_relative_distance: float = 0.1) -> None:
        self._detector = (
            LanguageDetectorBuilder.from_languages(*DETECTED_LANGUAGES)
            .with_minimum_relative_distance(min_relative_distance)
            .with_low_accuracy_mode()
            .build()
        )

    def detect(self, text: str) -> str | None:
        """ISO 639-1 code of the text's language, or None when unsure."""
        language = self._detector.detect_language_of(text[:SAMPLE_CHARS])
        return language.iso_code_639_1.name.lower() if language is not None else None

    def is_english(self, ticket: TicketEvent) -> bool:
        if ticket.language:
            return ticket.language.lower().split("-")[0] == "en"
        detected = self.detect(f"{ticket.subject}\n{ticket.body}")
        return detected in (None, "en")
