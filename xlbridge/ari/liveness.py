"""
The ARI events socket's liveness check: :mod:`xlbridge.liveness`, which
the Deepgram connections share.  Kept so ``xlbridge.ari.liveness`` imports
keep working.
"""

from xlbridge.liveness import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S, Liveness

__all__ = ["LIVENESS_IDLE_S", "LIVENESS_TIMEOUT_S", "Liveness"]
