"""Subcommands of ``personsearch`` implemented by the trainer (each: add_arguments, run)."""
