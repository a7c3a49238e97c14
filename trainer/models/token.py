"""Signing in to the Hugging Face Hub for gated and private models.

The token is kept exactly where huggingface_hub keeps its own login (``HF_HOME/token`` and the
stored-tokens file, both made owner-only), so every downloader on the machine, the trainer
subprocess included, finds it without the studio passing it anywhere: never in a config, a YAML
file, an MLflow run, a job folder or a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import HfApi, constants, get_token, login, logout
from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

OWNER_ONLY = 0o600


class SignInError(ValueError):
    """The token was refused or the Hub could not check it; the message says which."""


@dataclass(frozen=True)
class Access:
    allowed: bool | None  # None: could not tell (offline, Hub unreachable)
    message: str


def _token_files() -> list[Path]:
    return [Path(constants.HF_TOKEN_PATH), Path(constants.HF_STORED_TOKENS_PATH)]


def _user_name(token: str) -> str:
    try:
        who = HfApi().whoami(token=token)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            raise SignInError(
                "The Hub refused this token (HTTP 401). Fix: copy a token again from "
                "https://huggingface.co/settings/tokens ('Read' access is enough)."
            ) from None
        raise SignInError(f"The Hub could not check the token ({type(exc).__name__}).") from None
    except (httpx2.HTTPError, OSError) as exc:
        raise SignInError(f"The Hub could not be reached ({type(exc).__name__}).") from None
    return str(who.get("name") or "unknown")


def sign_in(token: str) -> str:
    """Check ``token`` with the Hub, store it as huggingface_hub's login, and return the
    account name. Raises SignInError (without the token in its message) when refused."""
    token = token.strip()
    if not token:
        raise SignInError("Paste a token first (it starts with 'hf_').")
    name = _user_name(token)
    login(token=token, add_to_git_credential=False, skip_if_logged_in=False)
    for path in _token_files():
        if path.exists():
            os.chmod(path, OWNER_ONLY)
    return name


def sign_out() -> None:
    if get_token() is not None and Path(constants.HF_TOKEN_PATH).exists():
        logout()


def signed_in_user() -> str | None:
    """The account name of the stored (or HF_TOKEN) token, or None when there is none or the
    Hub cannot confirm it."""
    token = get_token()
    if not token:
        return None
    try:
        return _user_name(token)
    except SignInError:
        return None


def repo_access(repo_id: str) -> Access:
    """Whether the signed-in account may download ``repo_id`` (a gated repo's licence must be
    accepted on its page first)."""
    page = f"{constants.ENDPOINT.rstrip('/')}/{repo_id}"
    try:
        HfApi().auth_check(repo_id)
    except GatedRepoError:
        if get_token() is None:
            return Access(False, f"gated: sign in with a token, then accept the licence at {page}")
        return Access(False, f"gated: this account has not accepted the licence yet — {page}")
    except RepositoryNotFoundError:
        return Access(False, "not found, or private and this account cannot see it")
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        return Access(None, f"could not check access ({type(exc).__name__})")
    return Access(True, "this account has access")
