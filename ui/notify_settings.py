"""The studio's notification setting (on Home): where a message goes when a run ends, as an
apprise URL (ntfy, Slack, Discord, e-mail, a JSON webhook, ...), saved in the studio home
(``notify.json``, mode 0600), shown masked, with a "Send a test notification" button.

STUDIO_NOTIFY_URL in the studio's environment wins over the saved URL (the form says so and hides
itself). Served beyond this machine the URL can be tested but not changed here: anyone who can open
the page could otherwise make the studio send requests wherever they like.
"""

from __future__ import annotations

import streamlit as st

from trainer.notify import (
    NOTIFY_ENV,
    mask_url,
    save_notify_url,
    send_test_notification,
    url_problem,
)
from trainer.settings import StudioSettings, load_settings
from ui.access import served_beyond_loopback
from ui.text import code, plain

FORM_KEY = "notify:form"
URL_KEY = "notify:url"
SAVE_KEY = "notify:save"
TEST_KEY = "notify:test"
REMOVE_KEY = "notify:remove"
CLEAR_KEY = "notify:clear"
FLASH_KEY = "notify:flash"  # what the last save or removal did, shown once after its rerun
EXAMPLES = "ntfys://my-topic, discord://id/token, mailtos://user:pass@example.com, json://host/path"


def render_notify_settings(settings: StudioSettings | None = None) -> None:
    """The settings block: the URL in use (masked), a form to set it, test and remove buttons."""
    settings = settings or load_settings()
    from_env = bool(settings.notify_url.get_secret_value().strip())
    current = settings.notify_url_in_use()
    with st.container(border=True, key="notify_settings"):
        st.subheader(":material/notifications: When a run ends")
        st.caption(
            "Every open studio page shows a toast and the browser tab's title shows the status. "
            "To hear of it elsewhere too, give a notification URL: one message per finished, "
            f"failed or stopped run, with no token or secret in it. Examples: {EXAMPLES}."
        )
        if flash := st.session_state.pop(FLASH_KEY, None):
            st.success(flash, icon=":material/check:")
        if current:
            where = f" (set by {code(NOTIFY_ENV)} in the environment)" if from_env else ""
            st.markdown(f"Messages go to {code(mask_url(current))}{where}.")
        else:
            st.caption("No notification URL is set: nothing is sent outside the studio.")
        if not from_env and not served_beyond_loopback():
            _url_form(settings)
        elif not from_env:
            st.caption("Served beyond this machine, the URL can be changed only from 127.0.0.1.")
        if current:
            _buttons(settings, current, removable=not from_env and not served_beyond_loopback())


def _url_form(settings: StudioSettings) -> None:
    if st.session_state.pop(CLEAR_KEY, False):  # saved: the box keeps no copy of the URL
        st.session_state[URL_KEY] = ""
    # Not cleared on submit: a URL that cannot be used stays in the box to be corrected; a
    # saved one is cleared (CLEAR_KEY) so the box keeps no copy of it.
    with st.form(FORM_KEY, clear_on_submit=False, border=False):
        url = st.text_input(
            "Notification URL",
            type="password",
            key=URL_KEY,
            placeholder="ntfys://my-topic",
            help=(
                "An apprise URL: https://github.com/caronc/apprise/wiki lists every service. It is "
                f"kept in {settings.notify_file} (readable by you only); trainers get it in their "
                "environment, never in MLflow or a log."
            ),
        )
        saved = st.form_submit_button("Save", key=SAVE_KEY)
    if saved and url.strip():
        problem = url_problem(url)
        if problem:
            st.error(plain(problem), icon=":material/error:")
            return
        save_notify_url(settings, url)
        st.session_state[CLEAR_KEY] = True
        st.session_state[FLASH_KEY] = f"Saved: messages go to {code(mask_url(url))}."
        st.rerun()


def _buttons(settings: StudioSettings, current: str, removable: bool) -> None:
    with st.container(horizontal=True):
        test = st.button("Send a test notification", key=TEST_KEY, icon=":material/send:")
        remove = removable and st.button("Remove", key=REMOVE_KEY, icon=":material/delete:")
    if test:
        problem = send_test_notification(current)
        if problem:
            st.error(f"The test message was not sent: {plain(problem)}", icon=":material/error:")
        else:
            st.success(f"Test message sent to {code(mask_url(current))}.", icon=":material/check:")
    if remove:
        save_notify_url(settings, "")
        st.session_state[FLASH_KEY] = "Removed: no message is sent outside the studio."
        st.rerun()
