"""The Monitor's "Your LoRA" downloads (``ui.monitor.render_files`` / ``_stored_downloads``): a
run saved in both layouts offers two files that download under two names, each saying what it
is for (the walk found both saved as ``my_lora_lr1e-3.safetensors``)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from trainer.lora.usage import download_name, lora_purpose

SINGLE = "my_lora_lr1e-3.safetensors"
DIFFUSERS = "my_lora_lr1e-3/pytorch_lora_weights.safetensors"


def _downloads_app(job_dir: str, stored: list[str]) -> None:
    """The job folder's downloads (``stored`` empty), else the MLflow ones; every
    download_button call's label and file name are recorded in the session state."""
    from pathlib import Path

    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator

    import ui.monitor as monitor
    from trainer.settings import StudioSettings
    from ui.monitor_view import RunView

    recorded = st.session_state.setdefault("downloads", [])
    real_button, real_method, real_loras = (
        st.download_button,
        DeltaGenerator.download_button,
        monitor._loras,
    )

    def recording(self: DeltaGenerator, label: str, **kwargs: object) -> bool:
        recorded.append((label, kwargs["file_name"]))
        return real_method(self, label, **kwargs)

    # st.download_button and a column's download_button both record
    DeltaGenerator.download_button = recording
    st.download_button = lambda label, **kwargs: recording(st._main, label, **kwargs)
    monitor._loras = lambda uri, run_id, marker: []  # no MLflow run behind this view
    try:
        if stored:
            monitor._stored_downloads(StudioSettings(), "r1", stored)
        else:
            view = RunView(
                *("r1", "my_lora_lr1e-3", "FINISHED", "0", "", {}, None, Path(job_dir)),
                *(None, False, {"phase": "finished"}, None, None),
            )
            monitor.render_files(StudioSettings(), view)
    finally:
        st.download_button, monitor._loras = real_button, real_loras
        DeltaGenerator.download_button = real_method


def test_both_layouts_download_under_two_names_saying_what_each_is_for(tmp_path: Path) -> None:
    lora = tmp_path / "lora"
    (lora / DIFFUSERS).parent.mkdir(parents=True)
    (lora / SINGLE).write_bytes(b"webui")
    (lora / DIFFUSERS).write_bytes(b"diffusers")
    at = AppTest.from_function(_downloads_app, args=(str(tmp_path), []), default_timeout=30).run()
    assert not at.exception, at.exception
    downloads = sorted(at.session_state["downloads"], key=lambda d: d[1])
    assert downloads == [
        ("Download · single file for ComfyUI / A1111 / Forge", "my_lora_lr1e-3.safetensors"),
        ("Download · diffusers layout: load_lora_weights", "my_lora_lr1e-3_diffusers.safetensors"),
    ]
    shown = " ".join(m.value for m in at.markdown)
    assert "downloads as `my_lora_lr1e-3_diffusers.safetensors`" in shown


def test_a_teammates_run_offers_both_layouts_from_mlflow_under_two_names() -> None:
    stored = [f"lora/{SINGLE}", f"lora/{DIFFUSERS}", "lora/README.md", "lora/samples/s.png"]
    at = AppTest.from_function(_downloads_app, args=("", stored), default_timeout=30).run()
    assert not at.exception, at.exception
    assert at.session_state["downloads"] == [
        (
            "Download my_lora_lr1e-3.safetensors · single file for ComfyUI / A1111 / Forge",
            "my_lora_lr1e-3.safetensors",
        ),
        (
            "Download my_lora_lr1e-3_diffusers.safetensors · diffusers layout: load_lora_weights",
            "my_lora_lr1e-3_diffusers.safetensors",
        ),
    ]


def test_download_names_keep_a_single_file_and_name_the_diffusers_layout() -> None:
    assert download_name(SINGLE) == SINGLE
    assert download_name("best.safetensors") == "best.safetensors"  # a checkpoint made final
    assert download_name(DIFFUSERS) == "my_lora_lr1e-3_diffusers.safetensors"
    assert lora_purpose(SINGLE) != lora_purpose(DIFFUSERS)
