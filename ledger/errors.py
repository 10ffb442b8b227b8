"""Error types shared by every package; the CLI maps them to exit codes (design §9).

They live in `ledger` because it is the one package every other package may import
without pulling in heavy dependencies.
"""


class ErasureError(Exception):
    """Base class: a one-line, user-facing reason."""

    exit_code = 2


class BadInput(ErasureError):
    """Malformed or unknown input: bad usage, unknown subject, unreadable file (exit 2)."""

    exit_code = 2


class VerificationFailed(ErasureError):
    """A signature, proof, digest or consistency check did not hold (exit 1)."""

    exit_code = 1


class ServiceError(ErasureError):
    """A required local service or tool (Kafka, MLflow, Java, Maven) is missing or down (exit 2)."""

    exit_code = 2


class CorruptState(ErasureError):
    """A local store failed an integrity check: a SQLite file SQLite calls malformed, a
    checkpoint whose digest is not the one its component recorded, an unreadable journal (exit 2).
    A service stops on it: every message would fail the same way, and rejecting them would turn
    a disk fault into refused requests."""

    exit_code = 2


class LeaseLost(ServiceError):
    """A model's lease (the shared deployment's model lock) expired or was taken over while a
    version was being made: nothing is published. Transient for the services: the retry waits
    for the new holder and finds the work done (exit 2)."""

    exit_code = 2
