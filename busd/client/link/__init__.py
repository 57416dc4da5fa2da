"""The link thread (sockets) of a client and what it reports."""
