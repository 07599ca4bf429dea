"""Subcommands of ``personsearch`` owned by the runtime (``index``, ``query``, ``info``, ``bench``).

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and is a thin
shell over one public function of the runtime.
"""
