"""
Asterisk REST Interface (ARI) control: with ``--ari``, Asterisk only sends
callers to ``Stasis(xlbridge,...)`` and xlbridge sets up the bridges and
ExternalMedia channels (RTP or AudioSocket) itself (see PROTOCOLS.md
sections 5 and 6).
"""
