"""
Asterisk REST Interface (ARI) control: with ``--ari``, Asterisk only sends
callers to ``Stasis(xlbridge,...)`` and xlbridge sets up the bridges and
ExternalMedia channels itself (see PROTOCOLS.md section 5).
"""
