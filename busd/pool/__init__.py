"""The pool of workers: its command side and supervisor, spawning, the fork server, listening
sockets, logs, hooks, exits, orphans, the fd budget, recycling.
"""
