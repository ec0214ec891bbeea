"""Kalpana: GitOps deployments for Docker."""

__version__ = "0.1.0"
