"""Personal data and secrets replaced by typed placeholders before any text reaches a model. Pure.

Ticket text carries e-mail addresses, phone numbers, card numbers, IBANs, IP addresses and pasted
credentials. The model needs none of them to classify a ticket, and each one sent is personal data
handed to a third party, so the prompt shows ``<email_1>``, ``<card_1>``… instead. The routed ticket
keeps the original: only the text sent to the model changes.

Design choices, each for a reason:

* Every detector finds spans on the original text, and overlaps are resolved before anything is
  replaced, so no pattern ever runs over a placeholder another one put in.
* Lookalikes are checked, not guessed: a card number must pass Luhn, an IBAN its mod-97 checksum, an
  IP address ``ipaddress``'s parser, a phone number libphonenumber's validity rules (through the
  ``phonenumbers`` package, whose metadata ships in its wheel). A 16-digit order number, a date or a
  version stays as written.
* Patterns are flat (a character class with a bounded or linear repetition, no quantified groups),
  and where a candidate needs splitting or several readings that is done in Python over the match,
  so a hostile 200 KB input costs linear time, never catastrophic backtracking.
* Text that merely looks like a placeholder (a customer typing ``<email_1>``) is escaped as
  ``&lt;email_1>``, so a real placeholder can never be forged or made to collide.
* The same value gets the same placeholder within one ticket (numbered per kind, in order of first
  appearance), so the model can still see that two mentions are the same address.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import phonenumbers

KINDS: Final = ("email", "phone", "card", "iban", "ip", "secret")
"""Every kind of redaction, in the order overlapping finds are preferred (secrets first)."""
NONE = "none"
DEFAULT_PHONE_REGIONS: Final = ("US",)

SCAN_MARGIN = 4_096
"""Characters read past a length cap, so a value that straddles the cap is still found whole (and
replaced whole) instead of a half that no pattern recognises being sent."""


class RedactionError(ValueError):
    """A redaction setting that is not understood; the message names the allowed values."""


@dataclass(frozen=True)
class RedactionPolicy:
    """Which kinds are redacted, and the regions whose national phone formats are recognised
    (numbers written with a leading ``+`` are recognised whatever the region)."""

    kinds: frozenset[str] = frozenset(KINDS)
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)

    @property
    def signature(self) -> str:
        """A stable description for ``prompt_version``: what is redacted changes what a model sees."""
        if not self.kinds:
            return NONE
        kinds = ",".join(kind for kind in KINDS if kind in self.kinds)
        regions = ",".join(self.phone_regions) if "phone" in self.kinds else ""
        return f"{kinds};{regions}" if regions else kinds


OFF = RedactionPolicy(kinds=frozenset())


def parse_kinds(value: str) -> frozenset[str]:
    """``REDACT``'s value: kinds separated by commas, ``all``, or ``none`` (nothing redacted)."""
    names = [part.strip().lower() for part in value.split(",") if part.strip()]
    allowed = f"allowed: {', '.join(KINDS)}, or all, or none"
    if not names:
        raise RedactionError(f"must name at least one kind ({allowed})")
    if NONE in names or "all" in names:
        if len(names) > 1:
            raise RedactionError(f"'none' and 'all' stand alone ({allowed})")
        return frozenset() if names[0] == NONE else frozenset(KINDS)
    unknown = [name for name in names if name not in KINDS]
    if unknown:
        raise RedactionError(f"unknown kind {unknown[0]!r} ({allowed})")
    return frozenset(names)


def parse_regions(value: str) -> tuple[str, ...]:
    """``REDACT_PHONE_REGIONS``: ISO 3166 region codes libphonenumber knows (``US,GB,DE``)."""
    regions = tuple(dict.fromkeys(part.strip().upper() for part in value.split(",") if part.strip()))
    if not regions:
        raise RedactionError("must name at least one region, e.g. US or US,GB,DE")
    for region in regions:
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise RedactionError(f"unknown region {region!r} (two-letter ISO 3166 codes such as US, GB, DE)")
    return regions


# -- finding -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """One value to replace: ``text[start:end]``, its kind, and the form that identifies it (so the
    same address written twice, or in another case, gets the same placeholder)."""

    start: int
    end: int
    kind: str
    key: str


_EMAIL = re.compile(r"[\w.%+\-]{1,64}@[\w\-]{1,63}\.[\w.\-]{2,252}")
_EMAIL_TAIL = ".-"

# A run of digits with single spaces or hyphens; split into groups and searched in Python.
_DIGIT_RUN = re.compile(r"\d[\d \-]*\d")
_SEPARATORS = re.compile(r"[ \-]+")
CARD_DIGITS = (13, 19)
CARD_GROUP = (3, 6)

# Two letters, two check digits, then up to 42 letters, digits and spaces (an IBAN is at most 34
# characters, printed in groups of four). Looked for at every start by a zero-width lookahead, so a
# rejected candidate does not hide an IBAN that starts inside it.
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?=([A-Za-z]{2}\d\d[A-Za-z0-9 ]{11,46}))")
IBAN_LENGTH = (15, 34)
# The length of every country's IBAN (ISO 13616 registry), so each candidate is checked once at
# the one length its country uses, and two letters that name no IBAN country are not read at all.
IBAN_LENGTHS: Final = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
FIND_CACHE_SIZE = 4_096
"""Texts whose finds are remembered (examples repeat; a ticket's own text rarely does)."""
PHONE_MAX_TRIES = 1_000
"""Candidates libphonenumber may reject per region before it gives up on a text: bounds the CPU a
text full of number-like decoys costs (real numbers found do not count against it)."""

_IPV4 = re.compile(r"(?<![\w.])[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(?![0-9]|\.[0-9])")
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f:.]{2,45}")

_SECRET_PATTERNS: Final = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"),  # Anthropic (sk-ant-…), OpenAI and similar keys
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"),  # Slack tokens
    re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{10,}"),  # JWTs
)
# Only the credential is replaced: "Bearer <secret_1>", "password: <secret_2>".
_SECRET_VALUES: Final = (
    re.compile(r"\b(?:Bearer|Basic)[ \t]{1,8}([A-Za-z0-9\-._~+/]{16,}=*)", re.IGNORECASE),
    re.compile(
        r"\b(?:api[_\-]?key|secret|token|password|passwd|pwd)[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?"
        r"([^\s\"',;]{6,200})",
        re.IGNORECASE,
    ),
)
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----")
_KEY_END = re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY( BLOCK)?-----")
_KEY_BODY = re.compile(r"[A-Za-z0-9+/=:,\- \t\r\n]*")  # a block cut short (by a cap) is still a key


# Cheap tests that rule a kind out before its patterns run: most texts hold no PII at all, and
# examples and tickets are scanned for every kind (measured: 1.3 ms a user turn without them).
_DIGIT = re.compile(r"\d")
_IBAN_HINT = re.compile(r"[A-Za-z]{2}\d\d")
_SECRET_HINT = re.compile(
    r"sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abposr]-|eyJ|bearer|basic|api[_\-]?key|secret|token|"
    r"passw|pwd|-----BEGIN",
    re.IGNORECASE,
)


def digit_count(text: str) -> int:
    return len(_DIGIT.findall(text))


def _emails(text: str, _policy: RedactionPolicy) -> Iterator[Found]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        value = match.group().rstrip(_EMAIL_TAIL)
        domain = value.rsplit("@", 1)[1]
        labels = domain.split(".")
        if len(labels) < 2 or "" in labels or not labels[-1].isalpha() or len(labels[-1]) < 2:
            continue
        yield Found(match.start(), match.start() + len(value), "email", value.lower())


def luhn_valid(digits: Sequence[int]) -> bool:
    """The Luhn checksum every payment card number carries."""
    total = 0
    for index, digit in enumerate(reversed(digits)):
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _card_window(groups: Sequence[tuple[int, int, list[int]]], first: int) -> tuple[int, list[int]] | None:
    """The longest run of groups from ``first`` that reads as a card number, as (last group, digits).

    A card written without separators is one group of 13-19 digits; one printed in groups has groups
    of 3-6 digits (4-4-4-4, 4-6-5). Cards start with 2-6 (no issuer uses the others) and must pass
    Luhn. Lists of small numbers ("10 20 30 …") never qualify, whatever their checksum.
    """
    best: tuple[int, list[int]] | None = None
    digits: list[int] = []
    for last in range(first, len(groups)):
        group = groups[last][2]
        grouped = CARD_GROUP[0] <= len(group) <= CARD_GROUP[1]
        if last > first and not (grouped and CARD_GROUP[0] <= len(groups[first][2]) <= CARD_GROUP[1]):
            break
        digits = digits + group
        if len(digits) > CARD_DIGITS[1]:
            break
        if len(digits) >= CARD_DIGITS[0] and 2 <= digits[0] <= 6 and luhn_valid(digits):
            best = (last, list(digits))
    return best


def _cards(text: str, _policy: RedactionPolicy) -> Iterator[Found]:
    if digit_count(text) < CARD_DIGITS[0]:
        return
    for match in _DIGIT_RUN.finditer(text):
        groups: list[tuple[int, int, list[int]]] = []
        offset = match.start()
        position = 0
        run = match.group()
        for separator in [*_SEPARATORS.finditer(run), None]:
            end = separator.start() if separator is not None else len(run)
            groups.append((offset + position, offset + end, [int(ch) for ch in run[position:end]]))
            if separator is not None:
                position = separator.end()
        first = 0
        while first < len(groups):
            window = _card_window(groups, first)
            if window is None:
                first += 1
                continue
            last, digits = window
            yield Found(groups[first][0], groups[last][1], "card", "".join(map(str, digits)))
            first = last + 1


def iban_valid(compact: str) -> bool:
    """ISO 13616 mod-97: the country and check digits moved to the end, letters as 10-35, mod 97 = 1."""
    if not IBAN_LENGTH[0] <= len(compact) <= IBAN_LENGTH[1]:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _iban_end(candidate: str, length: int) -> int | None:
    """Where the IBAN of ``length`` characters that ``candidate`` starts with ends (single spaces
    between characters allowed), or None if it is shorter."""
    count = 0
    for index, char in enumerate(candidate):
        if char == " ":
            if index + 1 < len(candidate) and candidate[index + 1] == " ":
                return None
            continue
        count += 1
        if count == length:
            return index + 1
    return None


def _ibans(text: str, _policy: RedactionPolicy) -> Iterator[Found]:
    if _IBAN_HINT.search(text) is None:
        return
    taken_until = 0
    for match in _IBAN_START.finditer(text):
        start = match.start()
        candidate = match.group(1)
        length = IBAN_LENGTHS.get(candidate[:2].upper())
        if start < taken_until or length is None or not candidate[2:4].isascii():
            continue
        end = _iban_end(candidate, length)
        if end is None or text[start + end : start + end + 1].isalnum():
            continue
        compact = candidate[:end].replace(" ", "").upper()
        if compact.isascii() and iban_valid(compact):
            taken_until = start + end
            yield Found(start, start + end, "iban", compact)


def _ips(text: str, _policy: RedactionPolicy) -> Iterator[Found]:
    if text.count(".") >= 3:
        yield from _ipv4s(text)
    if text.count(":") >= 2:
        yield from _ipv6s(text)


def _ipv4s(text: str) -> Iterator[Found]:
    for match in _IPV4.finditer(text):
        try:
            address = ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        yield Found(match.start(), match.end(), "ip", str(address))


def _ipv6s(text: str) -> Iterator[Found]:
    for match in _IPV6.finditer(text):
        value = match.group().rstrip(".:") if not match.group().endswith("::") else match.group()
        if value.count(":") < 2 or not any(ch.isdigit() for ch in value):
            continue
        try:
            address6 = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield Found(match.start(), match.start() + len(value), "ip", str(address6))


def _phones(text: str, policy: RedactionPolicy) -> Iterator[Found]:
    if digit_count(text) < 7:
        return  # no phone number has fewer digits; skips the matcher for most short texts
    for region in policy.phone_regions:
        for match in phonenumbers.PhoneNumberMatcher(text, region, max_tries=PHONE_MAX_TRIES):
            if _inside_identifier(text, match.start, match.end):
                continue
            key = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            yield Found(match.start, match.end, "phone", key)


_JOINERS = "-_/#"


def _inside_identifier(text: str, start: int, end: int) -> bool:
    """Digits that continue a word ("INV-2024-000123", "SKU_4155552671"): an id, not a number to call."""
    before = text[start - 1 : start]
    if before in _JOINERS and before:
        before = text[start - 2 : start - 1]
    after = text[end : end + 1]
    if after in _JOINERS and after:
        after = text[end + 1 : end + 2]
    return before.isalnum() or after.isalnum()


def _private_keys(text: str) -> Iterator[Found]:
    ends = list(_KEY_END.finditer(text))
    end_index = 0
    taken_until = 0
    for begin in _KEY_BEGIN.finditer(text):
        if begin.start() < taken_until:
            continue
        while end_index < len(ends) and ends[end_index].start() < begin.end():
            end_index += 1
        if end_index < len(ends):
            stop = ends[end_index].end()
        else:
            body = _KEY_BODY.match(text, begin.end())
            stop = body.end() if body is not None else begin.end()
        taken_until = stop
        yield Found(begin.start(), stop, "secret", text[begin.start() : stop])


def _secrets(text: str, _policy: RedactionPolicy) -> Iterator[Found]:
    if _SECRET_HINT.search(text) is None:
        return
    yield from _private_keys(text)
    for pattern in _SECRET_PATTERNS:
        for match in pattern.finditer(text):
            yield Found(match.start(), match.end(), "secret", match.group())
    for pattern in _SECRET_VALUES:
        for match in pattern.finditer(text):
            yield Found(match.start(1), match.end(1), "secret", match.group(1))


Detector = Callable[[str, RedactionPolicy], Iterable[Found]]
DETECTORS: Final[dict[str, Detector]] = {
    "secret": _secrets,
    "email": _emails,
    "iban": _ibans,
    "card": _cards,
    "ip": _ips,
    "phone": _phones,
}
"""In order of preference when two finds overlap (a JWT is a secret, not a phone number)."""


@functools.lru_cache(maxsize=FIND_CACHE_SIZE)
def find_pii(text: str, policy: RedactionPolicy) -> tuple[Found, ...]:
    """Every value to replace, sorted and non-overlapping.

    Memoised: the retrieved examples shown with tickets are the same few texts again and again; the
    numbering of placeholders is the Redactor's, so a cached find serves every ticket.

    Overlaps go to the earlier start, then the longer find, then the preferred kind (``DETECTORS``
    order), so a card number is never also read as a phone number.
    """
    rank = {kind: index for index, kind in enumerate(DETECTORS)}
    finds = [
        found
        for kind, detect in DETECTORS.items()
        if kind in policy.kinds
        for found in detect(text, policy)
        if found.end > found.start
    ]
    finds.sort(key=lambda f: (f.start, -(f.end - f.start), rank[f.kind]))
    chosen: list[Found] = []
    for found in finds:
        if chosen and found.start < chosen[-1].end:
            continue
        chosen.append(found)
    return tuple(chosen)


# -- replacing ---------------------------------------------------------------------------------------

_FORGED = re.compile(r"[<＜﹤](?=\s*(?:" + "|".join(KINDS) + r")\s*_)", re.IGNORECASE)


def neutralise_placeholders(text: str) -> str:
    """Escapes anything that reads as a placeholder, so customer text cannot forge one."""
    return _FORGED.sub("&lt;", text)


@dataclass
class Redactor:
    """One ticket's redaction: the placeholders given so far and how many values were replaced.

    Everything shown to the model about one ticket (its fields, the examples retrieved for it)
    should go through one Redactor, so the same value reads as the same placeholder throughout.
    """

    policy: RedactionPolicy = field(default_factory=RedactionPolicy)
    counts: Counter[str] = field(default_factory=Counter)
    _names: dict[tuple[str, str], str] = field(default_factory=dict)
    _per_kind: Counter[str] = field(default_factory=Counter)

    def placeholder(self, kind: str, key: str) -> str:
        name = self._names.get((kind, key))
        if name is None:
            self._per_kind[kind] += 1
            name = self._names[(kind, key)] = f"<{kind}_{self._per_kind[kind]}>"
        return name

    def redact(self, text: str) -> str:
        """``text`` with every value of the policy's kinds replaced; unchanged when nothing is on."""
        return self.redact_capped(text, None)[0]

    def redact_capped(self, text: str, limit: int | None) -> tuple[str, int]:
        """The first ``limit`` characters of ``text`` redacted, and how many original characters were
        left out (0: all of it is shown).

        A value that starts before the cap and ends after it is replaced whole, so a cap can never
        leave half an address for the model to read; the count is of the customer's characters.
        """
        if limit is not None and len(text) <= limit:
            limit = None
        if not self.policy.enabled:
            return (text, 0) if limit is None else (text[:limit], len(text) - limit)
        scanned = text if limit is None else text[: limit + SCAN_MARGIN]
        stop = len(scanned) if limit is None else limit
        parts: list[str] = []
        position = 0
        for found in find_pii(scanned, self.policy):
            if found.start >= stop:
                break
            parts.append(neutralise_placeholders(scanned[position : found.start]))
            parts.append(self.placeholder(found.kind, found.key))
            self.counts[found.kind] += 1
            position = found.end
        end = max(stop, position)
        parts.append(neutralise_placeholders(scanned[position:end]))
        return "".join(parts), len(text) - end


def redact_text(text: str, policy: RedactionPolicy | None = None) -> str:
    """``text`` redacted on its own (a fresh numbering): for one-off use and tests."""
    return Redactor(policy or RedactionPolicy()).redact(text)
