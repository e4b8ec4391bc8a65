"""The Parley command-line client (``parley client …``) and its typed HTTP API wrapper."""

from parley.client.api import ApiError, ClientError, ParleyApi, UnreachableError
from parley.client.cli import main

__all__ = ["ApiError", "ClientError", "ParleyApi", "UnreachableError", "main"]
