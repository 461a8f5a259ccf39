"""Argument types shared by the ``discovery`` subcommands: each turns bad input into a clear usage error."""

from __future__ import annotations

import argparse


def count(text: str, *, minimum: int) -> int:
    """A whole number of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number of at least {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return count(text, minimum=1)


def non_negative_int(text: str) -> int:
    return count(text, minimum=0)


def port(text: str) -> int:
    value = count(text, minimum=0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value}")
    return value
