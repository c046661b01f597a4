# No xlbridge import here: twistd scans every plugin file, and the real
# module is only imported when someone runs `twistd xlbridge`.
from twisted.application.service import ServiceMaker

xlbridge = ServiceMaker(
    "xlbridge",
    "xlbridge.tap",
    "Real-time interpreter between two phone callers over Asterisk RTP.",
    "xlbridge",
)
