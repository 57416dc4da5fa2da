"""The busd command: its flags, their values, and what ends it."""
