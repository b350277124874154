"""Opening an exported artifact: existence, manifest, backend, file checks and integrity, in one
order for every command; and running it in this process (what isolated children call)."""

from __future__ import annotations

from pathlib import Path

from lkca_edge.converters import get_backend
from lkca_edge.errors import UserError, first_line
from lkca_edge.logs import quiet
from lkca_edge.manifest import read_manifest, verify_artifact


def open_artifact(path: str | Path, verify: bool = True):
    """(artifact path, manifest, backend) of an exported artifact, checked in one order for
    every command: it exists -> its manifest reads -> the manifest's backend is known -> the file
    looks like that backend's artifact -> (``verify``) its bytes match the manifest's sha256.
    Each failure is one UserError line."""
    artifact = Path(path)
    if not artifact.exists():
        raise UserError(f"artifact not found: {artifact}")
    manifest = read_manifest(artifact)
    backend = get_backend(manifest.backend)
    backend.check_artifact_file(artifact)
    if verify:
        verify_artifact(artifact, manifest)
    return artifact, manifest, backend


def static_check(backend, artifact) -> dict:
    """``backend.inspect(artifact)`` for an artifact this machine cannot run: a file the backend
    cannot read is refused (UserError); a missing converter package only skips the check."""
    try:
        return backend.inspect(artifact) or {}
    except ImportError:
        return {}
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - parsers of untrusted files raise anything
        raise UserError(f"{artifact} is not a readable {backend.name} artifact "
                        f"({first_line(exc)})") from None


def run_artifact(backend_name: str, path: str, images, threads: int = 1, batch_size: int = 1):
    """Load an artifact and return its logits for ``images`` (the artifact's own input: float
    tensors or uint8 pixels), ``batch_size`` per call (runs inside an isolated child)."""
    with quiet():  # runtimes (and what they import) log to fd 2; LKCA_EDGE_DEBUG=1 shows it
        runner = get_backend(backend_name).load(path, threads=threads)
        return runner.run_many(images, batch_size)
