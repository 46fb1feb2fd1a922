"""`python -m decodebench ...`: hands the command line to the verbs (decodebench/cli/verbs.py)."""

from decodebench.cli.verbs import main

if __name__ == "__main__":
    main()
