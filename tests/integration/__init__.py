"""
Integration tests: the real reactor over loopback UDP, with simulated phones
(xlbridge.tools.phone) in place of Asterisk.  Ports are picked at run time.
"""
