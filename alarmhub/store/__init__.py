"""The store: ports.py says what the shell asks of it; sqlite/ is the one that answers today."""
