"""The master: MasterBus, its hub (the I/O thread), the registry of clients, the replay window, the
board, the runtime dir.
"""
