"""`python -m hub` = the `hub` command."""

from hub.cli.main import main

main()
