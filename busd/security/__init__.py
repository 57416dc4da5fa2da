"""The master's half of CURVE: the ZAP handler and key directories' roles."""
