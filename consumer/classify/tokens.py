"""Token estimation shared by the prompt-size check, cost estimates and the fake Messages API.

The real tokenizers are not available offline. Both sides use this one estimate so that a prompt
the router believes is above a model's minimum cacheable length is also above it for the fake API.
The estimate errs high (about 3.5 characters per token for English prose on the 4.x tokenizer), so
the start-up warning about a too-short cached prefix is conservative. The 5.x models' tokenizer
counts about 30% more tokens for the same text: pass the model's ``tokenizer_factor``
(``consumer.classify.models``). With an API key the router also asks the free ``count_tokens``
endpoint at start-up, which replaces this estimate with the real figure in the log.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 3.5


def estimate_tokens(text: str, factor: float = 1.0) -> int:
    """Estimated Claude tokens for ``text`` (0 for the empty string); ``factor`` is the tokenizer's."""
    if not text:
        return 0
    return math.ceil(len(text) * factor / CHARS_PER_TOKEN)


def chars_for_tokens(tokens: int, factor: float = 1.0) -> int:
    """Characters of prose that ``tokens`` tokens cover on a tokenizer with ``factor``."""
    return math.ceil(tokens * CHARS_PER_TOKEN / factor)
