"""Tabulate and plot a sweep (the same command as `lookahead report`): see lookahead/commands/report.py."""

from lookahead.commands.report import main

if __name__ == "__main__":
    main()
