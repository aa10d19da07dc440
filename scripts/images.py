"""Build every container image offline: ``make images`` (docs/operations.md, "Images").

Nothing is pulled from a registry. The base is a Debian 12 minbase root filesystem made by
mmdebstrap from the Debian mirror and loaded with ``docker import``; the Python images install
from a wheelhouse that pip fills on the host; PostgreSQL, Prometheus and nginx are Debian's
packages on that base.

The build context is a tar stream of exactly the files the Dockerfile COPYs, so neither the
1.3 GB of the other image's wheels nor .venv is ever sent to the engine, and the classic builder
(Docker 20.10 without buildx, which ignores per-Dockerfile ignore files) is enough.

Each image is tagged with a content hash of its inputs (the Dockerfile, its ignore file, every
file it COPYs, the base it builds on) and with ``:local``; a build whose hash tag already exists
is skipped, so a second run only hashes files. The wheelhouse is hashed by its wheel file names:
they carry the name, version and platform, and reading 1.3 GB of wheels each run would cost more
than every other step of a run that builds nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / "var" / "wheelhouse"

#: What the base root filesystem is made of; any change here is a new base hash.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: Documentation and translations are dropped: nothing in an image reads them.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
)
BASE_IMAGE = "modelplane/base"


@dataclass(frozen=True)
class Image:
    """One image built from a Dockerfile on the base; ``wheels`` names its wheelhouse set."""

    name: str
    dockerfile: str
    wheels: tuple[str, ...] = ()
    #: Extra tags besides the hash and ``:local`` (compose and Kubernetes use ``:latest``).
    extra_tags: tuple[str, ...] = ()


IMAGES = (
    Image(
        "modelplane-dataplane",
        "deploy/docker/Dockerfile.dataplane",
        wheels=("requirements/dataplane.txt", "requirements/examples.txt"),
        extra_tags=("latest",),
    ),
    Image(
        "modelplane-controlplane",
        "deploy/docker/Dockerfile.controlplane",
        wheels=("requirements/controlplane.txt",),
        extra_tags=("latest",),
    ),
    Image("modelplane/postgres", "deploy/docker/Dockerfile.postgres"),
    Image("modelplane/prometheus", "deploy/docker/Dockerfile.prometheus"),
    Image("modelplane-nginx", "deploy/docker/Dockerfile.nginx", extra_tags=("latest",)),
)

_COPY = re.compile(r"^COPY\s+(?!--from)(?:--\S+\s+)*(.+)$")


def run(command: Sequence[str]) -> None:
    """Run one build step; a failure stops the whole build after the tool's own message."""
    if subprocess.run(command).returncode != 0:
        sys.exit(f"images: `{' '.join(command[:3])} ...` failed")


def docker(*args: str) -> None:
    run(["docker", *args])


def image_exists(reference: str) -> bool:
    """Whether the engine holds this name:tag (docker answers non-zero when it does not)."""
    result = subprocess.run(["docker", "image", "inspect", reference], capture_output=True)
    return result.returncode == 0


def tag(source: str, name: str, tags: Sequence[str]) -> None:
    for extra in tags:
        docker("tag", source, f"{name}:{extra}")


def short_hash(data: bytes) -> str:
    """The tag form of a hash: 16 hex digits are plenty to tell a handful of builds apart."""
    return hashlib.sha256(data).hexdigest()[:16]


# -- base -------------------------------------------------------------------------------------


def base_hash() -> str:
    """The base's inputs are the mmdebstrap arguments: suite, packages, mirrors, excludes."""
    parts = (BASE_SUITE, *BASE_PACKAGES, *BASE_MIRRORS, *BASE_DPKG_OPTIONS)
    return short_hash("\0".join(parts).encode())


def build_base() -> str:
    """Make (or find) ``modelplane/base:<hash>``; returns that reference."""
    reference = f"{BASE_IMAGE}:{base_hash()}"
    if not image_exists(reference):
        if shutil.which("mmdebstrap") is None:
            sys.exit("mmdebstrap is required to build the base image: apt-get install mmdebstrap")
        with tempfile.TemporaryDirectory(dir=REPO / "var") as scratch:
            tarball = Path(scratch) / "base.tar"
            run(
                [
                    "mmdebstrap",
                    "--quiet",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
                    BASE_SUITE,
                    str(tarball),
                    *BASE_MIRRORS,
                ]
            )
            docker(
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["/bin/bash"]',
                str(tarball),
                reference,
            )
    tag(reference, BASE_IMAGE, ["local"])
    return reference


# -- wheelhouse -------------------------------------------------------------------------------


def wheelhouse_dir(image: Image) -> Path:
    return WHEELHOUSE / image.name.removeprefix("modelplane-")


def build_wheelhouse(image: Image, python: str) -> None:
    """Fill var/wheelhouse/<image> with pip unless its requirement files are what it was made of.

    The directory is rebuilt from scratch, so it holds exactly one requirement set's wheels.
    """
    target = wheelhouse_dir(image)
    stamp = target / ".inputs"
    inputs = files_hash([REPO / path for path in (*image.wheels, "constraints.txt")])
    if stamp.is_file() and stamp.read_text() == inputs:
        return
    shutil.rmtree(target, ignore_errors=True)
    requirements = [arg for path in image.wheels for arg in ("-r", str(REPO / path))]
    constraints = ("-c", str(REPO / "constraints.txt"))
    command = [python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target)]
    run([*command, *requirements, *constraints])
    stamp.write_text(inputs)


# -- image hashes -----------------------------------------------------------------------------


def copy_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile COPYs (``COPY --from`` reads a stage, not the context)."""
    sources: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = _COPY.match(line.strip())
        if match:
            sources.extend(match.group(1).split()[:-1])
    return sources


def context_files(source: str) -> Iterator[Path]:
    path = REPO / source
    if path.is_file():
        yield path
        return
    if not path.is_dir():
        sys.exit(f"{source} is missing: the image COPYs it (run `make install` first)")
    for found in sorted(path.rglob("*")):
        if found.is_file() and "__pycache__" not in found.parts:
            yield found


def files_hash(paths: Sequence[Path]) -> str:
    """Content hash of files, wheels by name (see the module docstring)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0")
        if path.suffix != ".whl":
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return short_hash(digest.digest())


def context(image: Image) -> list[Path]:
    """The build context: the Dockerfile and every file it COPYs."""
    paths = [REPO / image.dockerfile]
    for source in copy_sources(REPO / image.dockerfile):
        paths.extend(context_files(source))
    return paths


def send_context(image: Image, paths: Sequence[Path], build: subprocess.Popen[bytes]) -> None:
    """Stream the context as a tar to ``docker build -``, which reads it from stdin.

    The Dockerfile goes in as ``Dockerfile`` at the root, where a tar context's is looked for
    (the CLI refuses ``--file`` together with a context from stdin).
    """
    assert build.stdin is not None
    with (
        build.stdin,
        tarfile.open(fileobj=build.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar,
    ):
        for path in paths:
            relative = str(path.relative_to(REPO))
            name = "Dockerfile" if relative == image.dockerfile else relative
            tar.add(path, arcname=name, recursive=False)


def build_image(image: Image, base: str) -> bool:
    """Build ``name:<hash>`` unless it exists; tag it ``:local`` (and extras). True if built."""
    paths = context(image)
    content = short_hash(f"{base}\0{files_hash(paths)}".encode())
    reference = f"{image.name}:{content}"
    built = not image_exists(reference)
    if built:
        command = ["docker", "build", "--quiet", "--build-arg", f"BASE={base}"]
        command += ["--tag", reference, "-"]
        # the classic builder: BuildKit needs the buildx plugin, which Debian 12 does not ship
        build = subprocess.Popen(
            command, stdin=subprocess.PIPE, env={**os.environ, "DOCKER_BUILDKIT": "0"}
        )
        send_context(image, paths, build)
        if build.wait() != 0:
            sys.exit(f"building {reference} failed")
    tag(reference, image.name, ["local", *image.extra_tags])
    return built


# -- command line -----------------------------------------------------------------------------


def timed(label: str, started: float) -> None:
    print(f"{label}: {time.monotonic() - started:.1f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help="images to build (default: all), e.g. modelplane-dataplane"
    )
    parser.add_argument("--python", default=sys.executable, help="the pip that fills wheelhouses")
    args = parser.parse_args(argv)
    known = {image.name: image for image in IMAGES}
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[name] for name in args.names] or list(IMAGES)

    total = time.monotonic()
    started = time.monotonic()
    base = build_base()
    timed(f"base {base}", started)
    for image in chosen:
        started = time.monotonic()
        if image.wheels:
            build_wheelhouse(image, args.python)
        built = build_image(image, base)
        timed(f"{image.name} ({'built' if built else 'up to date'})", started)
    timed("images", total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
