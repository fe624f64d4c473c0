"""The resumable state of ``ticket-tools backfill``: batch ids, what was written, what is still to do.

Saved (atomically: a temporary file renamed over the old one) after every batch is submitted and
after every batch's results are written, so a run stopped at any point (Ctrl-C, a crash, a kill)
is continued by running the same command again: submitted batches are polled, not re-submitted;
tickets already written are not written again (the output files are cut back to the sizes the
state recorded, which drops a half-written tail); the spend so far is carried over.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.errors import UserError
from producer_tools.backfill_plan import Spend, Step
from schemas.events import Classification, TierAttempt

STATE_VERSION: Literal[1] = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchEntry(_Model):
    """One submitted batch: its id, the tier and attempt it asks, and the tickets (source positions)."""

    id: str
    tier: str
    attempt: int
    indices: list[int]
    collected: bool = False


class TicketProgress(_Model):
    """A ticket whose next request is not its first: where it goes next, and the attempts so far."""

    tier: str
    attempt: int
    history: list[TierAttempt] = Field(default_factory=list)
    classification: Classification | None = None
    last_error: str = ""

    @property
    def step(self) -> Step:
        return Step(self.tier, self.attempt)


class BackfillState(_Model):
    version: Literal[1] = STATE_VERSION
    source: str
    fingerprint: str = Field(description="Of the source's tickets and the prompt: a rerun must match it")
    total: int
    batches: list[BatchEntry] = Field(default_factory=list)
    progress: dict[int, TicketProgress] = Field(default_factory=dict)
    outcomes: dict[int, str] = Field(
        default_factory=dict, description="Source position → routed/triaged/skipped"
    )
    written_bytes: dict[str, int] = Field(default_factory=dict, description="Output file → bytes committed")
    batch_usd: float = 0.0
    live_usd: float = 0.0

    @property
    def spend(self) -> Spend:
        return Spend(self.batch_usd, self.live_usd)

    def in_flight(self) -> set[int]:
        """Tickets in a submitted batch whose results are not collected yet."""
        return {index for batch in self.batches if not batch.collected for index in batch.indices}

    def open_batches(self) -> list[BatchEntry]:
        return [batch for batch in self.batches if not batch.collected]


def load_state(path: Path) -> BackfillState | None:
    """The saved state, None when there is none yet; a damaged file is a one-line user error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"--state: cannot read {path}: {exc.strerror}") from None
    try:
        return BackfillState.model_validate_json(raw)
    except ValidationError as exc:
        raise UserError(
            f"--state: {path} is not a backfill state file ({exc.error_count()} problems); "
            "move it away to start over"
        ) from None


def save_state(path: Path, state: BackfillState) -> None:
    """Write then rename, so a kill mid-write leaves the previous state whole."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        file.write(state.model_dump_json().encode())
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
