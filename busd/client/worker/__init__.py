"""A pool worker's main, ASGI/WSGI serving, log files, descendants."""
