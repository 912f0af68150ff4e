"""`python -m consentgate` runs the command line."""

from consentgate.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module too
    main()
