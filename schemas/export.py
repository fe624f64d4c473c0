"""JSON Schema export of the wire models, so non-Python producers and consumers can validate."""

from __future__ import annotations

from pathlib import Path

import orjson

from schemas.corrections import CORRECTION_MODELS
from schemas.drafts import DRAFT_MODELS
from schemas.events import WIRE_MODELS
from schemas.shadow import SHADOW_MODELS

SCHEMA_DIR = Path(__file__).parent / "json"


def rendered_schemas() -> dict[str, bytes]:
    """File name → JSON Schema bytes, exactly as written by ``export``."""
    out: dict[str, bytes] = {}
    for model in WIRE_MODELS + CORRECTION_MODELS + SHADOW_MODELS + DRAFT_MODELS:
        schema = model.model_json_schema(mode="serialization")
        out[f"{model.__name__}.json"] = (
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
    return out


def export(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in rendered_schemas().items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    stale = []
    for name, content in rendered_schemas().items():
        path = directory / name
        if not path.exists() or path.read_bytes() != content:
            stale.append(name)
    return stale
