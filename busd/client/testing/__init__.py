"""What the pytest plugin runs in child processes: the harness and barriers."""
