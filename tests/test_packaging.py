"""The distribution as the Docker images install it: a wheel built from the checkout, in a clean venv.

No Docker engine runs here, so the proxy image's install steps are repeated in a fresh virtual
environment: the files that ``docker/Dockerfile.proxy`` copies, a wheel built from them, installed
with ``--no-deps`` beside the locked dependencies of the project's venv (a ``.pth`` line puts its
site-packages on ``sys.path``; the ``.pth`` files in there, such as the editable install's finder, are
not processed), and ``obliviate serve --backend transformers`` started from it outside the repository.
A module missing from the wheel, or a file the image does not copy, fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

from obliviate.proxy.engine import free_port, term_with_parent
from tests.engines import CLIENT_KEY, TEST_ENV, bundled_model_path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = ("Dockerfile.proxy", "Dockerfile.cpu", "Dockerfile.vllm")
LAYER_DIRS = ("proxy", "guards", "index", "unlearn", "evals")
# The child processes must not see the checkout through the environment.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(cmd: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=CLEAN_ENV, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _copied_sources(dockerfile: str) -> list[str]:
    """The repository paths a Dockerfile's COPY lines take from the build context."""
    sources = []
    for line in (REPO_ROOT / "docker" / dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"]:
            args = [w for w in words[1:] if not w.startswith("--")]
            sources += [src.rstrip("/") for src in args[:-1]]
    return sources


def _build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel` with the project venv's setuptools: no build isolation, no network."""
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    _run([*pip_wheel, "-w", out, source], out.parent)
    (wheel,) = out.glob("*.whl")
    return wheel


def _fresh_venv(path: Path) -> Path:
    """A venv without pip or the project whose sys.path ends with the project venv's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, env=CLEAN_ENV)
    python = path / "bin" / "python"
    site = _site_packages(python)
    locked = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "locked-deps.pth").write_text("".join(f"{p}\n" for p in sorted(locked)))
    return python


def _site_packages(python: Path) -> Path:
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([python, "-c", purelib], python.parent).stdout.strip())


def _pip_install(python: Path, *wheels: Path) -> None:
    # pip comes from the locked site-packages; --ignore-installed: the project venv's own obliviate
    # metadata is visible there too and must neither satisfy nor be uninstalled by this install.
    _run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", *wheels], python.parent
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from exactly what docker/Dockerfile.proxy copies into the image."""
    context = tmp_path_factory.mktemp("docker-context")
    for source in _copied_sources("Dockerfile.proxy"):
        src = REPO_ROOT / source
        if src.is_dir():
            shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, context / source)
    return _build_wheel(context, tmp_path_factory.mktemp("dist"))


def test_wheel_has_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(n.split("/")[0] for n in archive.namelist() if n.split("/")[0].endswith(".dist-info"))
        record = archive.read(f"{dist_info}/RECORD").decode()
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    roots = {row.split(",")[0].split("/")[0] for row in record.splitlines() if row}
    assert roots - {dist_info} == {"obliviate"}
    assert top_level == ["obliviate"]
    paths = {row.split(",")[0] for row in record.splitlines() if row}
    for layer in LAYER_DIRS:  # every layer's modules are in the wheel, under the import root
        modules = {f"obliviate/{layer}/{p.relative_to(REPO_ROOT / layer)}" for p in (REPO_ROOT / layer).rglob("*.py")}
        assert modules <= paths, sorted(modules - paths)


@pytest.mark.integration
@pytest.mark.slow
def test_proxy_image_install_serves_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    outside = tmp_path / "cwd"
    outside.mkdir()
    before = subprocess.run(
        [python, "-c", "import obliviate"], cwd=outside, env=CLEAN_ENV, capture_output=True, text=True
    )
    assert before.returncode != 0 and "No module named 'obliviate'" in before.stderr, before.stderr
    _run([python, "-c", "import fastapi, transformers"], outside)  # the locked dependencies are visible

    _pip_install(python, wheel)
    installed = _run([python, "-c", "import obliviate.proxy.cli as m; print(m.__file__)"], outside).stdout.strip()
    assert Path(installed).is_relative_to(_site_packages(python)), installed
    obliviate = python.parent / "obliviate"
    assert obliviate.is_file(), "the wheel's console script is missing"

    port = free_port()
    env = {**CLEAN_ENV, **TEST_ENV, "OBLIVIATE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    log_path = tmp_path / "serve.log"
    cmd = [obliviate, "serve", "--backend", "transformers", "--model-path", bundled_model_path(), "--port", port]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=outside,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=term_with_parent,
        )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (
                f"obliviate serve exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
            )
            assert time.monotonic() < deadline, f"not healthy after 300 s:\n{log_path.read_text()[-4000:]}"
            try:
                if httpx.get(f"{root}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        model_id = httpx.get(f"{root}/v1/models", headers=headers, timeout=10).json()["data"][0]["id"]
        body = {"model": model_id, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
        response = httpx.post(f"{root}/v1/chat/completions", json=body, headers=headers, timeout=120)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "tiny-proxy-evals"
version = "1.0"

[tool.setuptools]
packages = ["proxy", "evals"]
"""


def test_wheel_installs_beside_a_distribution_providing_proxy_and_evals(wheel: Path, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    for package in ("proxy", "evals"):
        (tiny / package).mkdir(parents=True)
        (tiny / package / "__init__.py").write_text(f'OWNER = "tiny-{package}"\n')
    (tiny / "pyproject.toml").write_text(TINY_PYPROJECT)
    tiny_wheel = _build_wheel(tiny, tmp_path / "tiny-dist")

    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, tiny_wheel)
    _pip_install(python, wheel)

    probe = (
        "import json, proxy, evals, obliviate.proxy, obliviate.evals\n"
        "print(json.dumps({m.__name__: [getattr(m, 'OWNER', None), m.__file__]\n"
        "                  for m in (proxy, evals, obliviate.proxy, obliviate.evals)}))\n"
    )
    modules = json.loads(_run([python, "-c", probe], tmp_path).stdout)
    site = _site_packages(python)
    assert modules["proxy"] == ["tiny-proxy", str(site / "proxy" / "__init__.py")]
    assert modules["evals"] == ["tiny-evals", str(site / "evals" / "__init__.py")]
    assert modules["obliviate.proxy"][1] == str(site / "obliviate" / "proxy" / "__init__.py")
    assert modules["obliviate.evals"][1] == str(site / "obliviate" / "evals" / "__init__.py")
    for package in ("proxy", "evals"):  # the tiny distribution's files are intact and alone
        files = {p.name for p in (site / package).iterdir() if p.name != "__pycache__"}
        assert files == {"__init__.py"}
        assert (site / package / "__init__.py").read_text() == f'OWNER = "tiny-{package}"\n'

    records = {}
    for record in site.glob("*.dist-info/RECORD"):
        records[record.parent.name] = {row.split(",")[0] for row in record.read_text().splitlines() if row}
    assert len(records) == 2, sorted(records)
    first, second = records.values()
    assert not first & second, f"files claimed by both distributions: {sorted(first & second)}"


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A new subpackage (a folder with __init__.py) cannot be left out of the wheel."""
    setuptools = _pyproject()["tool"]["setuptools"]
    folder_of = setuptools["package-dir"]
    found = {"obliviate"}
    for package, folder in folder_of.items():
        root = REPO_ROOT / folder
        for init in root.rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(root).parts]))
    assert set(setuptools["packages"]) == found
    assert set(folder_of) == {"obliviate", *(f"obliviate.{layer}" for layer in LAYER_DIRS)}
    for layer in LAYER_DIRS:  # a folder of modules without __init__.py would not be packaged at all
        for module in (REPO_ROOT / layer).rglob("*.py"):
            assert (module.parent / "__init__.py").is_file(), f"{module.parent} has no __init__.py"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_copy_what_the_package_needs(dockerfile: str) -> None:
    needed = {"pyproject.toml", "README.md", *_pyproject()["tool"]["setuptools"]["package-dir"].values()}
    missing = needed - set(_copied_sources(dockerfile))
    assert not missing, f"docker/{dockerfile} does not copy {sorted(missing)}"
    text = (REPO_ROOT / "docker" / dockerfile).read_text()
    assert not re.search(r"pip install[^\n]*\s-e\s", text), "the images install the package non-editable"
    if "make install" in text:  # the Makefile installs editable unless told otherwise
        assert "make install EDITABLE= " in text
