"""Pools on other hosts: busd --join, a pool that follows a master elsewhere."""
