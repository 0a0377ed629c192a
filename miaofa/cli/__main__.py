"""`python -m miaofa.cli`: how `miaofa up` starts its pieces, and the tests run the command."""

from miaofa.cli import app

app()
