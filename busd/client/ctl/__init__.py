"""busctl: the commands, their output for people, watch and wait."""
