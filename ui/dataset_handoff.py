"""The Datasets page's hand-off to the wizard: "Train on this dataset" puts the picked folder into
the draft as its first training dataset and opens the wizard at the Dataset step.

The draft's other settings stay. The trigger word comes from the captions when they agree on one
(the first tag of every caption, which is what the Captions tab's "Insert trigger" writes);
otherwise the draft keeps its own, except the demo dataset's, which leaves with the demo.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from trainer.data import library as dm
from ui import state
from ui.preflight import recommend_again_if_kept
from ui.status import WIZARD_PAGE
from ui.text import code

DATASET_STEP = "dataset"  # the wizard step (trainer.config.fields.WIZARD_STEPS) the button opens
TRIGGER_MAX_WORDS = 3  # "ohwx man" is a trigger word; a sentence shared by every caption is not


def caption_trigger_word(folder: Path) -> str | None:
    """The trigger word the captions agree on: the first tag of every caption, when every image
    has a caption and that tag is short; None otherwise."""
    captions = dm.read_captions(folder)
    first_tags = {caption.split(",")[0].strip() for caption in captions.values()}
    if len(first_tags) != 1:
        return None
    (word,) = first_tags
    return word if word and len(word.split()) <= TRIGGER_MAX_WORDS else None


def first_training_dataset() -> int:
    """The index of the draft's first dataset that is not for regularisation (one is added when
    every dataset is)."""
    datasets = state.get_value("datasets") or []
    for index, dataset in enumerate(datasets):
        if not dataset.get("is_reg"):
            return index
    state.add_dataset()  # a copy of the last one, as a training dataset
    return len(state.get_value("datasets")) - 1


def train_on(folder: Path, trigger_word: str | None) -> None:
    """Put ``folder`` into the draft and show the wizard's Dataset step next time it opens."""
    index = first_training_dataset()
    state.use_dataset_folder(index, str(folder.expanduser().absolute()), trigger_word)
    state.set_meta("step", DATASET_STEP)
    recommend_again_if_kept()  # its images, sizes and captions: the advice follows them


def render_train_handoff(folder: Path) -> None:
    """The "Train on this dataset" button, with the trigger word it will suggest."""
    trigger = caption_trigger_word(folder)
    with st.container(horizontal=True, vertical_alignment="center", key="dsm_train_row"):
        clicked = st.button(
            "Train on this dataset",
            key="dsm:train",
            type="primary",
            icon=":material/model_training:",
            help="Opens the wizard at its Dataset step with this folder as the training data; "
            "your other settings stay as they are.",
        )
        if trigger:
            st.caption(f"Trigger word from the captions: {code(trigger)}")  # what files say
    if clicked:
        train_on(folder, trigger)
        st.switch_page(WIZARD_PAGE)
