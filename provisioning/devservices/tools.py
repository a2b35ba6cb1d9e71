"""Build tools the tests need but no package registry here ships as a binary: helm.

helm is a Go program; `go install` builds it from the Go module proxy into a cache folder
shared by every checkout (`~/.cache/provisioning/tools`), so only the first run pays the
build (about 2 minutes with a cold Go cache, instant afterwards).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from provisioning.devservices.process import DevServiceError

HELM_MODULE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"


def tools_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "provisioning" / "tools"


def ensure_helm(version: str = HELM_VERSION, timeout_s: float = 900) -> Path:
    """The path of a helm binary of `version`, built with `go install` if not cached yet."""
    target = tools_dir() / f"helm-{version}"
    binary = target / "helm"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists()
                                else None)
    if go is None:
        raise DevServiceError("helm is needed to validate the chart and is built with Go, "
                              "but `go` is not installed (https://go.dev/doc/install)")
    target.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0"}
    try:
        result = subprocess.run([go, "install", f"{HELM_MODULE}@{version}"], env=env,
                                capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DevServiceError(f"building helm {version} took over {timeout_s:.0f} s") from None
    if result.returncode != 0 or not binary.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise DevServiceError(f"`go install {HELM_MODULE}@{version}` failed: "
                              + " | ".join(tail))
    return binary
