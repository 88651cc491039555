"""Which W&B mode a run uses: ``logger.wandb.mode`` (``auto|online|offline|disabled``) resolved against
what this machine has (wandb installed, an API key configured, ``WANDB_MODE``), without importing wandb.
"""

from __future__ import annotations

import importlib.util
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

WANDB_MODES = ("auto", "online", "offline", "disabled")
# Hosts whose .netrc entry counts as "an API key is configured" (wandb >= 0.31 defaults to the forge host
# and falls back to api.wandb.ai; WANDB_BASE_URL adds a self-hosted server).
WANDB_HOSTS = ("api.wandb.ai", "api.forge.coreweave.com")


def wandb_installed() -> bool:
    """True if the ``wandb`` package can be imported (without importing it)."""
    if "wandb" in sys.modules:
        return sys.modules["wandb"] is not None
    try:
        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


def _netrc_paths() -> list[Path]:
    """The .netrc files wandb reads: ``$NETRC`` if set, else ``~/.netrc`` and ``~/_netrc``."""
    if os.environ.get("NETRC"):
        return [Path(os.environ["NETRC"]).expanduser()]
    home = Path.home()
    return [home / ".netrc", home / "_netrc"]


def wandb_api_key_configured() -> bool:
    """True if ``WANDB_API_KEY`` is set or a .netrc file holds a password for a W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    hosts = set(WANDB_HOSTS)
    if os.environ.get("WANDB_BASE_URL"):
        hosts.add(urlsplit(os.environ["WANDB_BASE_URL"]).netloc)
    for path in _netrc_paths():
        if not path.is_file():
            continue
        try:
            entries = netrc.netrc(str(path))
        except (netrc.NetrcParseError, OSError):
            continue
        for host in hosts:
            creds = entries.authenticators(host)
            if creds and creds[2]:
                return True
    return False


def wandb_online_possible() -> bool:
    """Whether ``mode=online`` can work here: wandb installed and an API key configured."""
    return wandb_installed() and wandb_api_key_configured()


def resolve_wandb_mode(mode: str) -> str:
    """Turn ``logger.wandb.mode`` into the mode actually used: ``online``, ``offline`` or ``disabled``.

    ``auto`` -> ``disabled`` if wandb is not installed; else the ``WANDB_MODE`` environment variable if it
    names one of online/offline/disabled; else ``online`` if an API key is configured (``WANDB_API_KEY`` or
    ``~/.netrc``), else ``offline``. Any other value is returned as is after validation.

    Raises:
        ValueError: ``mode`` is not one of auto/online/offline/disabled.
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"invalid config: logger.wandb.mode={mode!r}; allowed values: {'|'.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    if not wandb_installed():
        return "disabled"
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if wandb_api_key_configured() else "offline"
