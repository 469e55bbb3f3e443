"""``python -m detlite`` runs the command line."""

from detlite.cli.main import main

if __name__ == "__main__":
    main()
