"""Entry point of the ``sandstorm`` command: the window, or a command-line tool.

Start-up must stay light: this module imports neither torch nor diffusers nor Qt at module
level, so ``sandstorm --version`` is instant and the window can paint before the engine
loads (the engine imports happen in the worker thread).
"""

from __future__ import annotations

import sys

from desktop.engine.environment import apply_defaults

# Before torch loads: sleeping OpenMP workers, offline Hub libraries (see environment.py).
apply_defaults()

CLI_COMMANDS = ("generate", "models", "info")
CLI_FLAGS = ("--version", "--check", "-h", "--help")


def main(argv: list[str] | None = None) -> int:
    """Run Sandstorm. With a sub-command or a support flag, run the command line instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and (args[0] in CLI_COMMANDS or args[0] in CLI_FLAGS):
        from desktop.cli import run_cli

        return run_cli(args)
    from desktop.ui.application import run_gui

    return run_gui(args)


if __name__ == "__main__":
    sys.exit(main())
