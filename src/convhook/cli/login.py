"""``convhook login`` and ``logout``: save or remove the server and key the remote commands use."""

from __future__ import annotations

import typer

from convhook.cli._common import err, fail
from convhook.cli.remote import (
    DEFAULT_PROFILE,
    Connection,
    api_key_option,
    call,
    normal_url,
    profiles_path,
    read_profiles,
    write_profiles,
)
from convhook.config import option


def login(
    api_url: str = option(
        ..., "--api-url", env="API_URL", help="Base URL of the server, e.g. http://127.0.0.1:8080."
    ),
    api_key: str = api_key_option(),
    profile: str = option(DEFAULT_PROFILE, "--profile", env="PROFILE", help="Name to save it as."),
    check: bool = option(
        True,
        "--check/--no-check",
        env="LOGIN_CHECK",
        help="Make one request with the key first and save nothing if it is refused.",
    ),
) -> None:
    """Save a server's URL and workspace key as a profile for the API commands.

    The profile goes to $XDG_CONFIG_HOME/convhook/profiles.json, readable by you only;
    endpoints, events and deliveries use it when neither a flag nor CONVHOOK_API_URL /
    CONVHOOK_API_KEY gives the server or the key.

    Example: ``convhook login --api-url http://127.0.0.1:8080 --api-key chk_... --profile local``
    """
    if not api_key:
        fail("no API key: pass --api-key or set CONVHOOK_API_KEY")
    url = normal_url(api_url)
    if check:
        call(Connection(url, api_key, "--api-url"), "GET", "/api/v2/endpoints", params={"limit": 1})
    profiles = read_profiles()
    profiles[profile] = {"apiUrl": url, "apiKey": api_key}
    path = write_profiles(profiles)
    err.print(f"saved profile {profile!r} for {url} in {path}", markup=False)


def logout(
    profile: str = option(DEFAULT_PROFILE, "--profile", env="PROFILE", help="Which profile."),
) -> None:
    """Remove a saved profile and its key from this machine.

    The key itself stays valid on the server: revoke it with `convhook workspaces keys revoke`.

    Example: ``convhook logout --profile local``
    """
    profiles = read_profiles()
    if profiles.pop(profile, None) is None:
        fail(f"no profile {profile!r} in {profiles_path()}", code=1)
    path = write_profiles(profiles)
    err.print(f"removed profile {profile!r} from {path}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    app.command("logout")(logout)
