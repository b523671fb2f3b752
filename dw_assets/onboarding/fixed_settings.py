"""What a registered client cannot change by onboarding again: its databases and its options (registration, the
step that stores them, does not run again when an onboarding resumes or is complete). A flag that asks for a
different value is refused with the stored value and the way to change it, never ignored.
"""
from __future__ import annotations

from dataclasses import asdict

from dw_assets.settings import Settings

from . import registry
from .client_options import ClientOptions, get_options


class FlagNotHonoured(registry.RegistryError):
    """An onboarding flag asks for something the already registered client cannot take."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def refuse_unhonourable_flags(settings: Settings, client: str, production_db: str | None, staging_db: str | None,
                              options: ClientOptions, done: set[str]) -> None:
    """Raise FlagNotHonoured naming the first flag whose value differs from what `client` is registered with."""
    if "register" not in done:
        return  # nothing registered yet: every flag is honoured
    row = registry.get_client(settings, client)
    redo = (f"to change it, offboard the client (`dw clients offboard {client}`, add --drop-data to drop its "
            f"lake data) and onboard it again with the new value")
    for flag, wanted, stored in (("--production-db", production_db, row.production_db),
                                 ("--staging-db", staging_db, row.staging_db)):
        if wanted is not None and wanted != stored:
            raise FlagNotHonoured(f"{client} is registered with {flag} {stored}: {flag} {wanted} cannot change it "
                                  f"(its topics, lake tables and snapshot come from {stored}); {redo}")
    stored_options = get_options(settings, client)
    for name, wanted in asdict(options).items():
        stored = getattr(stored_options, name)
        if wanted is not None and wanted != stored:
            shown = "the default" if stored is None else f"{_flag(name)} {stored:g}"
            raise FlagNotHonoured(f"{client} is registered with {shown}: {_flag(name)} {wanted:g} cannot change it; "
                                  f"{redo}")
