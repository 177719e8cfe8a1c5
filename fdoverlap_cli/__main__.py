from fdoverlap_cli.cli import entry_point

entry_point()
