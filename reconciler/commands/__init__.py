"""Subcommands of ``swarmkeeper``; each module is one command (see reconciler/cli.py)."""
