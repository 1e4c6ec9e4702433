"""Diamond's command line: one `diamond` command whose subcommands run each stage."""
