"""The `leukoscope` command and its subcommands."""
