"""Example worker targets shipped with busd."""
