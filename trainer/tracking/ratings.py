"""What the user says about runs: a 1-5 star rating per run, a 1-5 rating per sample image and the
run's note (all MLflow tags; each change is marked for the read cache)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from trainer.redaction import redact_text
from trainer.tracking.connect import mlflow_client
from trainer.tracking.layout import (
    MAX_KEY_LEN,
    MAX_TAG_LEN,
    TAG_NOTE,
    TAG_RATING,
    TAG_SAMPLE_RATING,
)
from trainer.tracking.run_cache import mark_changed


def set_rating(tracking_uri: str, run_id: str, rating: int) -> None:
    """The user's 1-5 star rating of the run (tag ``studio.rating``)."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"rating must be a whole number from 1 to 5, got {rating!r}")
    mlflow_client(tracking_uri).set_tag(run_id, TAG_RATING, str(rating))
    mark_changed(tracking_uri, run_id)


def sample_rating_tag(step: int, key: str) -> str:
    """The tag holding the rating of the image ``key`` logged at ``step``."""
    return f"{TAG_SAMPLE_RATING}.{int(step)}.{key}"[:MAX_KEY_LEN]


def set_sample_rating(tracking_uri: str, run_id: str, step: int, key: str, rating: int) -> None:
    """The user's 1-5 rating of one sample image (tag ``studio.sample_rating.<step>.<key>``,
    shown among the run's tags in the MLflow UI); 0 removes it."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 0 <= rating <= 5:
        raise ValueError(f"sample rating must be a whole number from 0 to 5, got {rating!r}")
    client, tag = mlflow_client(tracking_uri), sample_rating_tag(step, key)
    if rating:
        client.set_tag(run_id, tag, str(rating))
    elif tag in client.get_run(run_id).data.tags:
        client.delete_tag(run_id, tag)
    mark_changed(tracking_uri, run_id)


_SAMPLE_RATING = re.compile(rf"^{re.escape(TAG_SAMPLE_RATING)}\.(\d+)\.(.+)$")


def sample_ratings(tags: Mapping[str, str]) -> dict[tuple[int, str], int]:
    """``{(step, image key): rating}`` from a run's tags."""
    found = {}
    for tag, value in tags.items():
        match = _SAMPLE_RATING.match(tag)
        if match and value.isdigit():
            found[(int(match[1]), match[2])] = int(value)
    return found


def set_note(tracking_uri: str, run_id: str, text: str) -> None:
    """The run's note (MLflow's description, tag ``mlflow.note.content``)."""
    mlflow_client(tracking_uri).set_tag(run_id, TAG_NOTE, redact_text(text)[:MAX_TAG_LEN])
    mark_changed(tracking_uri, run_id)
