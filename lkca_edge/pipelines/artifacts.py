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
    looks like that backend's artifact -> the files its runtime would open are listed (a symlink
    or a path leaving the artifact is refused, even with ``verify`` off) -> (``verify``) the
    bytes of exactly those files match the manifest's sha256. Each failure is one UserError line."""
    artifact = Path(path)
    if not artifact.exists():
        raise UserError(f"artifact not found: {artifact}")
    manifest = read_manifest(artifact)
    backend = get_backend(manifest.backend)
    backend.check_artifact_file(artifact)
    try:
        files = backend.artifact_files(artifact)
    except UserError as exc:
        if verify and _changed_since_export(artifact, manifest):
            raise UserError(f"{artifact} does not match its manifest: the file changed since "
                            f"export and is now refused ({exc}); re-export it") from None
        raise
    if verify:
        verify_artifact(artifact, manifest, files)
    return artifact, manifest, backend


def _changed_since_export(artifact: Path, manifest) -> bool:
    """For an artifact whose files cannot even be listed (unparsable, a path leaving it): do its
    own bytes differ from the manifest's sha256? Then the change, not the file, is the news."""
    from lkca_edge.converters.base import MAX_ARTIFACT_BYTES
    from lkca_edge.manifest import sha256_of

    if artifact.is_symlink() or not artifact.is_file() or artifact.stat().st_size > MAX_ARTIFACT_BYTES:
        return False
    return sha256_of(artifact) != manifest.sha256


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
