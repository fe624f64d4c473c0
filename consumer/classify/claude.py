"""Claude tiers (fast = Haiku, strong = Sonnet): being built under issue 3."""

from __future__ import annotations

from consumer.classify.base import Tier
from consumer.config import ConfigError, Settings
from consumer.taxonomy import Taxonomy


def build_claude_tier(name: str, settings: Settings, taxonomy: Taxonomy) -> Tier:
    raise ConfigError(f"TIERS: the {name!r} tier is not available in this build yet (use TIERS=local)")
