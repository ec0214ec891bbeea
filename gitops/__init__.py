"""Kalpana: GitOps deployments for Docker."""

import os as _os

__version__ = "0.1.0"

# Kalpana uses no pydantic plugin, and looking for one reads the metadata of every installed
# distribution each time a command starts (~10 ms of its start-up). A user who sets it keeps theirs.
_os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
