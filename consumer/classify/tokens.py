"""Token estimation shared by the prompt-size check and the fake Messages API.

The real tokenizer is not available offline. Both sides use this one estimate so that a
prompt the router believes is above a model's minimum cacheable length is also above it for
the fake API; the estimate errs high (about 3.5 characters per token for English prose), so
the start-up warning about a too-short cached prefix is conservative.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 3.5


def estimate_tokens(text: str) -> int:
    """Estimated Claude tokens for ``text`` (0 for the empty string)."""
    if not text:
        return 0
    return math.ceil(len(text) / CHARS_PER_TOKEN)
