"""Export a finished run (the same command as `lookahead export`): see lookahead/commands/export.py."""

from lookahead.commands.export import main

if __name__ == "__main__":
    main()
