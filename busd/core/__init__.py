"""The core shared by the master and the clients: the bus, the wire, endpoints, errors, control,
the client half of CURVE.
"""
