"""
The exceptions xlbridge raises, rooted at :class:`XLBridgeError`.
"""

from __future__ import annotations


class XLBridgeError(Exception):
    """
    Base of every xlbridge error.
    """


class ConfigError(XLBridgeError, ValueError):
    """
    A setting has a bad value.

    :ivar option: the option's command-line name (``reply-codec``), or
        ``config`` for a problem with the file itself.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"--{option}: {message}")
        self.option = option
        self.message = message
