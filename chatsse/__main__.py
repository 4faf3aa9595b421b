"""`python -m chatsse`: the same as the `chatsse` command."""

from chatsse.cli import main

main()
