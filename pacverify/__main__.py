"""``python -m pacverify``: the command line."""
from pacverify.cli import main

if __name__ == "__main__":  # importing this module (doctest collection) must not run the CLI
    raise SystemExit(main())
