"""``personsearch`` subcommands owned by the exporter (each: ``add_arguments`` and ``run``)."""
