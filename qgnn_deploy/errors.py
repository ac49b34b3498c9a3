"""The one exception type users see: a clear one-line message and exit code 2."""


class QgnnError(Exception):
    """A user-facing error (bad input, missing toolchain, corrupt file).

    The command-line front end prints ``qgnn: error: <message>`` and exits with
    status 2; nothing else about the failure is shown unless ``QGNN_DEBUG=1``.
    """
