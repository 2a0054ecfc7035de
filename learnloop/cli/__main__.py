"""`python -m learnloop.cli ARGS`: the same as the `learnloop` command."""

from learnloop.cli import main

if __name__ == "__main__":
    main()
