"""Building a model's components from its folder, with Linea's precision policy.

Every class comes from diffusers or transformers; only the names in ALLOWED_CLASSES are ever
instantiated, so a model_index.json cannot make Linea import arbitrary code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.families import read_json
from runtime.catalog import ModelInfo
from runtime.device import DeviceInfo
from runtime.errors import CorruptWeightsError, ModelFolderError
from runtime.weights import check_shapes, dominant_dtype, read_component_tensors

log = logging.getLogger(__name__)



class _QuietInt8Cast(logging.Filter):
    """LLM.int8 always quantises activations through fp16 and logs it on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "inputs will be cast" not in record.getMessage()


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_QuietInt8Cast())


def _quiet_hub_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()

ALLOWED_CLASSES = {
    "SanaTransformer2DModel", "AutoencoderDC", "SanaControlNetModel",
    "DPMSolverMultistepScheduler", "FlowMatchEulerDiscreteScheduler", "SCMScheduler",
    "Gemma2Model", "Gemma2ForCausalLM", "GemmaTokenizer", "GemmaTokenizerFast",
    "PreTrainedTokenizerFast",
}

TORCH_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


@dataclass(frozen=True)
class Precision:
    """The dtype each component runs in, and whether the text encoder is 8-bit."""

    transformer: torch.dtype
    vae: torch.dtype
    text_encoder: torch.dtype
    quantize_text_encoder: bool

    def describe(self) -> str:
        def name(dtype: torch.dtype) -> str:
            return str(dtype).removeprefix("torch.")
        encoder = ("int8 (LLM.int8) with " + name(self.text_encoder) + " compute"
                   if self.quantize_text_encoder else name(self.text_encoder))
        return (f"transformer {name(self.transformer)}, decoder {name(self.vae)}, "
                f"text encoder {encoder}")


def choose_precision(model: ModelInfo, device: DeviceInfo, override: str = "auto",
                     quantize_text_encoder: bool = True) -> Precision:
    """DiT in its checkpoint's half precision; DC-AE and Gemma in bf16 (fp32 without bf16).

    Gemma gives NaN or empty output in fp16 and DC-AE can decode to black in fp16, so neither
    ever runs in fp16. On a CPU half precision is slow, so everything runs fp32 there.
    """
    if override not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"Unknown precision {override!r}: use auto, fp32, bf16 or fp16.")
    if device.is_cpu or override == "fp32":
        # LLM.int8 casts fp32 inputs to fp16, where Gemma overflows; bf16 keeps fp32's range.
        encoder = torch.bfloat16 if quantize_text_encoder else torch.float32
        return Precision(torch.float32, torch.float32, encoder, quantize_text_encoder)
    safe = torch.bfloat16 if device.bf16 else torch.float32
    if override == "bf16":
        dit = torch.bfloat16
    elif override == "fp16":
        dit = torch.float16
    else:
        dit = TORCH_DTYPES.get(model.transformer_dtype, torch.float16)
        if dit == torch.float32 or (dit == torch.bfloat16 and not device.bf16):
            dit = torch.float16
    return Precision(dit, safe, safe, quantize_text_encoder)


def _class_for(index: dict[str, Any], component: str) -> tuple[str, str]:
    entry = index.get(component)
    if not isinstance(entry, list) or len(entry) != 2 or entry[1] not in ALLOWED_CLASSES:
        raise ModelFolderError(
            f"model_index.json names an unsupported class for '{component}': {entry}.",
            "Linea runs SANA-family models saved by diffusers.")
    return entry[0], entry[1]


def _library_class(library: str, name: str) -> Any:
    if library == "diffusers":
        import diffusers

        return getattr(diffusers, name)
    import transformers

    return getattr(transformers, name)


def _expected_shapes(cls: Any, folder: Path) -> dict[str, tuple[int, ...]]:
    """The parameter shapes a component's config implies, built on the meta device."""
    config = read_json(folder / "config.json")
    with torch.device("meta"):
        if hasattr(cls, "from_config"):
            module = cls.from_config(config)
        else:
            config_obj = cls.config_class.from_pretrained(folder, local_files_only=True)
            module = cls(config_obj)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def verify_component(model: ModelInfo, component: str) -> None:
    """Shapes on disk must match the config before from_pretrained sees them."""
    folder = model.path / component
    library, name = _class_for(read_json(model.path / "model_index.json"), component)
    try:
        expected = _expected_shapes(_library_class(library, name), folder)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise ModelFolderError(f"The config in '{folder}' cannot build a {name}: {exc}.",
                               "Copy the model folder again.") from exc
    found = read_component_tensors(folder)
    # Tied or derived buffers may be absent on disk; every tensor on disk must fit the config.
    tied = {k for k in expected if k not in found and k.endswith(("lm_head.weight",))}
    check_shapes(component, folder, {k: v for k, v in expected.items() if k not in tied}, found)


def _wrap_load_error(component: str, folder: Path, exc: Exception) -> CorruptWeightsError:
    return CorruptWeightsError(f"Loading the {component} from '{folder}' failed: {exc}.",
                               "Copy the model folder again; it may be damaged.")


def load_tokenizer(model: ModelInfo) -> Any:
    from transformers import AutoTokenizer

    _quiet_hub_libraries()
    folder = model.path / "tokenizer"
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"The tokenizer in '{folder}' cannot be read: {exc}.",
                               "Copy the model folder again.") from exc


def load_text_encoder(model: ModelInfo, precision: Precision, device: torch.device) -> Any:
    folder = model.path / "text_encoder"
    library, name = _class_for(read_json(model.path / "model_index.json"), "text_encoder")
    verify_component(model, "text_encoder")
    cls = _library_class(library, name)
    kwargs: dict[str, Any] = {"local_files_only": True, "use_safetensors": True,
                              "dtype": precision.text_encoder}
    if precision.quantize_text_encoder:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device}
    try:
        encoder = cls.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _wrap_load_error("text encoder", folder, exc) from exc
    if not precision.quantize_text_encoder:
        encoder = encoder.to(device)
    if device.type == "cuda":
        embedding = encoder.get_input_embeddings()
        encoder.set_input_embeddings(HostEmbedding(embedding.weight.detach().to("cpu")))
    return encoder.eval().requires_grad_(False)


class HostEmbedding(torch.nn.Module):
    """Gemma's 256k-token embedding table (1.1 GiB in bf16) kept in system memory.

    A prompt looks up ~550 rows once, so the table never needs to be on the GPU; only the rows
    used are copied over.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = torch.nn.functional.embedding(input_ids.to(self.weight.device), self.weight)
        return rows.to(input_ids.device, non_blocking=True)


def load_diffusers_component(model: ModelInfo, component: str, dtype: torch.dtype,
                             device: torch.device) -> Any:
    folder = model.path / component
    library, name = _class_for(read_json(model.path / "model_index.json"), component)
    verify_component(model, component)
    try:
        module = _library_class(library, name).from_pretrained(
            folder, torch_dtype=dtype, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _wrap_load_error(component, folder, exc) from exc
    return module.to(device).eval().requires_grad_(False)


def check_controlnet_folder(folder: Path) -> None:
    """A standalone ControlNet: config.json naming SanaControlNetModel, safetensors weights."""
    from runtime.weights import component_weight_files

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"'{folder}' is not a ControlNet folder: it has no config.json.",
                               "Pass the folder holding the ControlNet's config.json.")
    try:
        name = read_json(config_path).get("_class_name")
    except (ValueError, OSError) as exc:
        raise ModelFolderError(f"'{config_path}' is not valid JSON: {exc}.",
                               "Copy the ControlNet folder again.") from exc
    if name != "SanaControlNetModel":
        raise ModelFolderError(f"'{folder}' holds a {name}, not a SANA ControlNet.",
                               "Use a SanaControlNetModel folder.")
    if not component_weight_files(folder):
        raise ModelFolderError(f"'{folder}' has no .safetensors weights.",
                               "Copy the ControlNet folder again.")


def load_controlnet(folder: Path, dtype: torch.dtype, device: torch.device) -> Any:
    from diffusers import SanaControlNetModel

    check_controlnet_folder(folder)
    check_shapes("controlnet", folder, _expected_shapes(SanaControlNetModel, folder),
                 read_component_tensors(folder))
    try:
        module = SanaControlNetModel.from_pretrained(folder, torch_dtype=dtype,
                                                     use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _wrap_load_error("ControlNet", folder, exc) from exc
    return module.to(device).eval().requires_grad_(False)


def load_scheduler(model: ModelInfo) -> Any:
    folder = model.path / "scheduler"
    library, name = _class_for(read_json(model.path / "model_index.json"), "scheduler")
    try:
        return _library_class(library, name).from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"The scheduler config in '{folder}' cannot be read: {exc}.",
                               "Copy the model folder again.") from exc


def checkpoint_dtype(model: ModelInfo, component: str) -> str:
    return dominant_dtype(read_component_tensors(model.path / component))
