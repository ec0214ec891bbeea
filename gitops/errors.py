"""The one exception tree of Kalpana.

The core raises these; the CLI turns them into one red line and exit 1.
Every message says what went wrong *and* what to do about it.
"""

from __future__ import annotations


class KalpanaError(Exception):
    """Root of every expected error. ``str(err)`` is the line shown to users."""

    exit_code = 1


class ConfigError(KalpanaError):
    """kalpana.yaml, .env or an environment override is invalid."""


class SpecError(KalpanaError):
    """One problem in one deployment file, located by file, line and field."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file = file
        self.line = line
        self.field = field
        self.message = message
        where = f"{file}:{line}" if line else file
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")


class UnknownDeployment(KalpanaError):
    """A command named a deployment that no file declares."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        listing = ", ".join(sorted(known)) if known else "none are declared"
        super().__init__(f"unknown deployment {name!r}; known deployments: {listing}")


class DockerUnavailable(KalpanaError):
    """The Docker engine does not answer."""

    def __init__(self, address: str, detail: str = ""):
        self.address = address
        super().__init__(
            f"cannot reach Docker at {address}"
            + (f" ({detail})" if detail else "")
            + ": start the engine (`sudo systemctl start docker`, or `sudo dockerd &`)"
            " or point DOCKER_HOST / docker_host in kalpana.yaml at a running one"
        )


class DockerError(KalpanaError):
    """Docker answered, but refused what was asked (its message says why)."""


class ImageMissing(KalpanaError):
    """A base image is neither local nor pullable."""

    def __init__(self, image: str, detail: str = "", fallback: str | None = None):
        self.image = image
        self.detail = detail
        super().__init__(
            f"base image {image!r} is not on this Docker host and could not be pulled"
            + (f" ({detail})" if detail else "")
            + f": run `docker pull {image}` where a registry is reachable (or `docker load` a saved copy),"
            " or set `image` in the deployment file to an image you have"
            + (f"; the fallback {fallback} named in image_fallbacks is not on this host either" if fallback else "")
        )


class BuildFailed(KalpanaError):
    """The build phase failed; nothing running was changed."""


class DeployFailed(KalpanaError):
    """The new container did not come up; the old one keeps serving."""


class SourceError(KalpanaError):
    """A deployment's source cannot be read."""


class LockTimeout(KalpanaError):
    """Another Kalpana process held the state lock for too long."""


class Cancelled(KalpanaError):
    """A build was interrupted (Ctrl-C, SIGTERM, or superseded by a newer push)."""

    exit_code = 130
