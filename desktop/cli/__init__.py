"""Sandstorm's command line: ``generate``, ``models``, ``info``, ``--check``, ``--version``.

Every command prints a one-line clear message and exits non-zero on an error a user can
cause; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys

from desktop import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sandstorm", description="Sandstorm: an offline Stable Diffusion studio."
    )
    parser.add_argument("--version", action="version", version=f"sandstorm {__version__}")
    parser.add_argument(
        "--check",
        action="store_true",
        help="print device, torch build, models and folders; exit non-zero if broken",
    )
    sub = parser.add_subparsers(dest="command")
    from desktop.cli import generate, info, models

    generate.add_parser(sub)
    models.add_parser(sub)
    info.add_parser(sub)
    return parser


def run_cli(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check:
        from desktop.cli.check import run_check

        return run_check()
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


def fail(message: str) -> int:
    """Print a one-line error for the user and return the failure exit code."""
    print(f"sandstorm: error: {message}", file=sys.stderr)
    return 1
