"""Signing in to the Hugging Face Hub from the studio, for gated and private models.

The token goes from a password box straight to ``trainer.models.token.sign_in``, which stores it
as huggingface_hub's own login (owner-only files in HF_HOME), where every download and trainer
finds it. The box is emptied in the same callback, so the token does not stay in the session
state, and the studio writes it nowhere else.
"""

from __future__ import annotations

import os

import streamlit as st
from huggingface_hub import constants

from trainer.models.token import SignInError, sign_in, sign_out
from ui import model_status
from ui.text import plain


def current_account() -> str | None:
    return model_status.current_account()


def _result_key(key: str) -> str:
    return f"{key}:result"


def _sign_in(key: str) -> None:
    field = f"{key}:token"
    token = str(st.session_state.get(field) or "")
    st.session_state[field] = ""  # the token leaves the session state before anything else
    try:
        name = sign_in(token)
    except SignInError as err:
        st.session_state[_result_key(key)] = ("error", str(err))
        return
    st.session_state[_result_key(key)] = ("ok", f"Signed in as **{name}**.")


def _sign_out(key: str) -> None:
    sign_out()
    st.session_state[_result_key(key)] = ("ok", "Signed out: the stored token is deleted.")


def render_hub_sign_in(key: str) -> str | None:
    """The account line with Sign out, or the token box with Sign in; returns the account name."""
    user = current_account()
    result = st.session_state.pop(_result_key(key), None)
    if result is not None and result[0] == "error":
        st.error(f"**Not signed in:** {plain(result[1])}", icon=":material/error:")
    if user:
        st.markdown(f":material/account_circle: **Signed in to Hugging Face as {user}**")
        if os.environ.get("HF_TOKEN"):
            st.caption("The token comes from the HF_TOKEN variable: unset it to sign out.")
        else:
            st.button(
                "Sign out",
                key=f"{key}:sign_out",
                on_click=_sign_out,
                args=(key,),
                icon=":material/logout:",
            )
        return user
    if result is not None and result[0] == "ok":
        st.caption(result[1])
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.text_input(
            "Hugging Face token",
            type="password",
            key=f"{key}:token",
            placeholder="hf_...",
            help="A 'Read' token is enough for downloads.",
        )
        st.button(
            "Sign in",
            key=f"{key}:sign_in",
            on_click=_sign_in,
            args=(key,),
            icon=":material/login:",
        )
    tokens_url = f"{constants.ENDPOINT.rstrip('/')}/settings/tokens"
    st.caption(
        f"Create a token at [{tokens_url}]({tokens_url}). It is kept where huggingface_hub "
        f"keeps its own login (`{constants.HF_TOKEN_PATH}`, readable only by you), never in "
        f"the studio's configs, runs or logs."
    )
    return None
