"""Finding model folders and telling what they are, without loading weights."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from models.families import FAMILIES, Family, FolderFacts, family_with_overrides, read_json
from runtime.errors import ModelFolderError
from runtime.paths import bundled_models_dir, user_models_dir
from runtime.weights import (
    PICKLE_SUFFIXES,
    component_weight_files,
    dominant_dtype,
    parameter_count,
    read_component_tensors,
)

WEIGHT_COMPONENTS = ("text_encoder", "transformer", "vae", "controlnet")
LAYOUT_HINT = ("A model is a folder in the diffusers layout: model_index.json plus one folder "
               "per component (transformer/, vae/, text_encoder/, tokenizer/, scheduler/).")


@dataclass(frozen=True)
class ModelInfo:
    """A model folder as the catalogue sees it."""

    name: str
    path: Path
    family: Family
    source: str
    transformer_params: int
    transformer_dtype: str
    component_params: dict[str, int]
    embedding_params: int
    size_bytes: int
    native_size: int
    max_side: int
    # A ControlNet rides along: the family's own, or a `controlnet/` folder added beside the
    # components of a SANA or SANA-Sprint model (Sprint + ControlNet: sketches in 1-4 steps).
    controlnet: bool = False
    # A prompt judge (judge/) rides along: the model can draw several candidates per image and
    # keep the one that shows the prompt best.
    judge: bool = False

    @property
    def size_label(self) -> str:
        billions = self.transformer_params / 1e9
        if billions >= 0.1:
            return f"{billions:.1f}B"
        if self.transformer_params >= 1e6:
            return f"{self.transformer_params / 1e6:.0f}M"
        return f"{self.transformer_params / 1e3:.0f}K"

    @property
    def description(self) -> str:
        extra = " + ControlNet" if self.controlnet and not self.family.controlnet else ""
        return f"{self.family.label}{extra} {self.size_label}, {self.native_size}px"


def _folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def read_facts(path: Path) -> FolderFacts:
    """Read model_index.json, linea.json and the configs; raise ModelFolderError if unusable."""
    path = Path(path)
    if not path.exists():
        raise ModelFolderError(f"The model folder '{path}' does not exist.",
                               "Check the path, or run `python main.py models` to list models.")
    if not path.is_dir():
        if path.suffix.lower() in (*PICKLE_SUFFIXES, ".safetensors"):
            raise ModelFolderError(f"'{path}' is a single weights file, not a model folder.",
                                   LAYOUT_HINT)
        raise ModelFolderError(f"'{path}' is not a folder.", LAYOUT_HINT)
    index_path = path / "model_index.json"
    if not index_path.is_file():
        raise ModelFolderError(f"'{path}' is not a model folder: it has no model_index.json.",
                               LAYOUT_HINT)
    try:
        index = read_json(index_path)
        overrides = read_json(path / "linea.json") if (path / "linea.json").is_file() else {}
    except (ValueError, OSError) as exc:
        raise ModelFolderError(f"'{index_path.parent}' has an unreadable JSON file: {exc}.",
                               "Copy the model folder again.") from exc
    class_name = index.get("_class_name", "")
    if class_name not in FAMILIES:
        supported = ", ".join(f.label for f in FAMILIES.values())
        raise ModelFolderError(
            f"'{path}' holds a {class_name or 'unknown'} model, which Linea cannot run.",
            f"Supported families: {supported}.")
    try:
        family = family_with_overrides(FAMILIES[class_name], overrides)
    except ValueError as exc:
        raise ModelFolderError(f"'{path / 'linea.json'}' is invalid: {exc}.",
                               "Fix that entry, or copy the model folder again.") from exc
    configs: dict[str, dict] = {}
    for component in family.components:
        folder = path / component
        if not folder.is_dir():
            raise ModelFolderError(f"'{path}' lacks its {component}/ folder.",
                                   "Copy the complete model folder, with every component.")
        if component in WEIGHT_COMPONENTS:
            config_path = folder / "config.json"
            if not config_path.is_file():
                raise ModelFolderError(f"'{folder}' has no config.json.",
                                       "Copy the complete model folder again.")
            try:
                configs[component] = read_json(config_path)
            except (ValueError, OSError) as exc:
                raise ModelFolderError(f"'{config_path}' is not valid JSON: {exc}.",
                                       "Copy the model folder again.") from exc
            if not component_weight_files(folder):
                raise ModelFolderError(f"'{folder}' has no .safetensors weights.",
                                       "Copy the complete model folder again.")
    if family.candidates > 1:
        judge = path / "judge"
        if not (judge / "config.json").is_file() or not component_weight_files(judge):
            raise ModelFolderError(
                f"'{path / 'linea.json'}' asks for {family.candidates} candidates per image, "
                f"but the folder has no prompt judge (judge/ with config.json and "
                f"model.safetensors) to choose among them.",
                "Copy the complete model folder again, or set \"candidates\" to 1.")
    return FolderFacts(family, index, overrides, configs["transformer"], configs["vae"])


def identify(path: Path | str, source: str = "added") -> ModelInfo:
    path = Path(path).expanduser().resolve()
    facts = read_facts(path)
    tensors = read_component_tensors(path / "transformer")
    params = {"transformer": parameter_count(tensors)}
    embedding_params = 0
    added_controlnet = (not facts.family.controlnet
                        and (path / "controlnet" / "config.json").is_file())
    for component in ("text_encoder", "vae", "controlnet"):
        if component in facts.family.components or (component == "controlnet"
                                                     and added_controlnet):
            found = read_component_tensors(path / component)
            params[component] = parameter_count(found)
            if component == "text_encoder":
                embedding_params = sum(parameter_count({k: v}) for k, v in found.items()
                                       if "embed" in k)
    return ModelInfo(
        name=str(facts.overrides.get("name", path.name)),
        path=path,
        family=facts.family,
        source=source,
        transformer_params=parameter_count(tensors),
        transformer_dtype=dominant_dtype(tensors),
        component_params=params,
        embedding_params=embedding_params,
        size_bytes=_folder_size(path),
        native_size=facts.native_size,
        max_side=facts.max_side,
        controlnet=facts.family.controlnet or added_controlnet,
        judge=(path / "judge" / "config.json").is_file(),
    )


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface")
    return Path(hf_home) / "hub"


def _candidates(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    if (root / "model_index.json").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "model_index.json").is_file())


def _hf_snapshots(cache: Path) -> list[Path]:
    if not cache.is_dir():
        return []
    found = []
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        ref = repo / "refs" / "main"
        if ref.is_file() and (snapshots / ref.read_text().strip()).is_dir():
            found.append(snapshots / ref.read_text().strip())
        elif snapshots.is_dir():
            found.extend(sorted(snapshots.iterdir())[-1:])
    return [p for p in found if (p / "model_index.json").is_file()]


@dataclass(frozen=True)
class CatalogProblem:
    path: Path
    message: str


def find_models(extra_dirs: list[Path] | tuple[Path, ...] = (),
                include_hf_cache: bool = True) -> tuple[list[ModelInfo], list[CatalogProblem]]:
    """Every usable model, and the folders that look like models but cannot be used."""
    places: list[tuple[str, Path]] = [("bundled", p) for p in _candidates(bundled_models_dir())]
    places += [("user", p) for p in _candidates(user_models_dir())]
    for extra in extra_dirs:
        places += [("added", p) for p in _candidates(Path(extra).expanduser())]
    if include_hf_cache:
        places += [("hf-cache", p) for p in _hf_snapshots(hf_cache_dir())]
    models: list[ModelInfo] = []
    problems: list[CatalogProblem] = []
    seen: set[Path] = set()
    for source, path in places:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        try:
            models.append(identify(resolved, source))
        except ModelFolderError as exc:
            problems.append(CatalogProblem(resolved, str(exc)))
    return models, problems


REPLICA_NOTE = ("Random weights: a stand-in written because no model was found. Its images are "
                "noise; install a model folder to make real images.")


def default_model(extra_dirs: tuple[Path, ...] = ()) -> ModelInfo:
    """The first model found (bundled ones come first). With none at all, a small random replica
    is written to the user models folder so the app still runs end to end, and says so."""
    models, _ = find_models(extra_dirs)
    if models:
        return models[0]
    from models.replica import write_replica

    target = user_models_dir() / "stand-in-replica"
    if not (target / "model_index.json").is_file():
        if target.exists():
            import shutil

            shutil.rmtree(target)
        write_replica("sana-600m", target, tiny=True, seed=0)
        (target / "linea.json").write_text(json.dumps(
            {"name": "stand-in-replica", "knows": REPLICA_NOTE, "native_size": 256}))
    return identify(target, "user")


def resolve_model(name_or_path: str, extra_dirs: tuple[Path, ...] = ()) -> ModelInfo:
    """A path, or the name of a catalogued model; the default model when empty."""
    if name_or_path and (os.sep in name_or_path or "/" in name_or_path
                         or Path(name_or_path).expanduser().exists()):
        return identify(name_or_path)
    if not name_or_path:
        return default_model(extra_dirs)
    models, _ = find_models(extra_dirs)
    for model in models:
        if model.name == name_or_path or model.path.name == name_or_path:
            return model
    names = ", ".join(m.name for m in models) or "none"
    raise ModelFolderError(f"No model named '{name_or_path}' was found (found: {names}).",
                           "Pass a folder path, or run `python main.py models`.")
