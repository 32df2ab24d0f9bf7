"""Model families Linea knows: how to recognise a folder and what its defaults are.

A model folder is in diffusers layout. The family comes from `model_index.json`'s pipeline class,
refined by an optional `linea.json` (the in-house model writes one). Adding a family means adding a
`Family` here and, if its sampling differs, a sampler in runtime/sampling.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLOW_SAMPLERS = ("flow-dpm-solver", "flow-euler")
# Guidance at every noise level: the interval of a model that does not limit it.
FULL_INTERVAL = (0.0, 1.0)


def _whole_words(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", flags=re.IGNORECASE)


@dataclass(frozen=True)
class ContrastRule:
    """One way to derive a contrast prompt from a prompt, and how hard to steer away from it.

    `rewrites` are (regular expression, replacement) pairs; a pattern matches whole words in any
    case, and a replacement may name its groups (`\\1`). Every match of any pattern is replaced
    in one pass from left to right (at one place the longest match), so a rewrite's output is
    never rewritten again."""

    scale: float
    rewrites: tuple[tuple[str, str], ...]
    about: str = ""  # what it steers away from, in plain words, for the user

    def rewrite(self, prompt: str) -> str | None:
        """`prompt` (its runs of spaces made one) with every match replaced; None when nothing
        matches."""
        text = " ".join(prompt.split())
        patterns = [(_whole_words(pattern), replacement) for pattern, replacement in self.rewrites]
        pieces, position, changed = [], 0, False
        while True:
            best: tuple[re.Match[str], str] | None = None
            for pattern, replacement in patterns:
                found = pattern.search(text, position)
                if found and found.end() > found.start() and (
                        best is None or (found.start(), -found.end())
                        < (best[0].start(), -best[0].end())):
                    best = (found, replacement)
            if best is None:
                break
            found, replacement = best
            pieces += [text[position:found.start()], found.expand(replacement)]
            position, changed = found.end(), True
        return "".join([*pieces, text[position:]]) if changed else None


@dataclass(frozen=True)
class ContrastGuidance:
    """Steer the steps at some noise levels away from a rewritten prompt.

    At a noise level inside `interval` that classifier-free guidance leaves alone, the velocity
    is `cond + scale * (cond - contrast)`, where `contrast` is the prediction for the prompt as
    the first of `rules` that applies to it rewrites it, and `scale` is that rule's. The
    in-house model uses it to steer the steps that lay out the image away from one object more
    than the prompt asks. A prompt no rule applies to is sampled as without it.
    """

    interval: tuple[float, float]
    rules: tuple[ContrastRule, ...]

    def contrast(self, prompt: str) -> tuple[str, float] | None:
        """(contrast prompt, scale) from the first rule that rewrites `prompt`; None when none
        does."""
        for rule in self.rules:
            text = rule.rewrite(prompt)
            if text is not None:
                return text, rule.scale
        return None

    @property
    def about(self) -> str:
        """What it steers away from, in plain words (empty when a rule does not say)."""
        said = [rule.about for rule in self.rules]
        return "; or ".join(said) if all(said) else ""


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    pipeline_class: str
    components: tuple[str, ...]
    samplers: tuple[str, ...]
    default_steps: int
    step_range: tuple[int, int]
    default_guidance: float
    uses_cfg: bool
    complex_human_instruction: bool
    max_tokens: int = 300
    controlnet: bool = False
    knows: str = ""
    # Noise levels (sigma: 0 clean, 1 pure noise) at which classifier-free guidance is applied;
    # outside it a step runs the conditional branch alone. Guidance at the noisiest steps can
    # hurt a model (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval"); the
    # in-house model measures better with it off there (models/tiny/README.md).
    guidance_interval: tuple[float, float] = FULL_INTERVAL
    # linea.json's `contrast_guidance`, for flow-sampled models that ask for it.
    contrast: ContrastGuidance | None = None
    # linea.json's `candidates`: images drawn per image asked for, the best kept by the
    # folder's prompt judge (judge/, runtime/judge.py); 1 draws one and needs no judge.
    candidates: int = 1


SANA = Family(
    key="sana",
    label="SANA",
    pipeline_class="SanaPipeline",
    components=("tokenizer", "text_encoder", "transformer", "vae", "scheduler"),
    samplers=FLOW_SAMPLERS,
    default_steps=20,
    step_range=(1, 100),
    default_guidance=4.5,
    uses_cfg=True,
    complex_human_instruction=True,
)

SANA_SPRINT = Family(
    key="sana-sprint",
    label="SANA-Sprint",
    pipeline_class="SanaSprintPipeline",
    components=("tokenizer", "text_encoder", "transformer", "vae", "scheduler"),
    samplers=("scm",),
    default_steps=2,
    step_range=(1, 4),
    default_guidance=4.5,
    uses_cfg=False,
    complex_human_instruction=True,
)

SANA_CONTROLNET = Family(
    key="sana-controlnet",
    label="SANA ControlNet",
    pipeline_class="SanaControlNetPipeline",
    components=("tokenizer", "text_encoder", "transformer", "vae", "scheduler", "controlnet"),
    samplers=FLOW_SAMPLERS,
    default_steps=20,
    step_range=(1, 100),
    default_guidance=4.5,
    uses_cfg=True,
    complex_human_instruction=True,
    controlnet=True,
)

FAMILIES: dict[str, Family] = {f.pipeline_class: f for f in (SANA, SANA_SPRINT, SANA_CONTROLNET)}


@dataclass(frozen=True)
class FolderFacts:
    """What a model folder says about itself, read without loading any weights."""

    family: Family
    index: dict[str, Any]
    overrides: dict[str, Any]
    transformer_config: dict[str, Any]
    vae_config: dict[str, Any]

    @property
    def latent_scale(self) -> int:
        blocks = self.vae_config.get("encoder_block_out_channels") or [0] * 6
        return 2 ** (len(blocks) - 1)

    @property
    def native_size(self) -> int:
        if "native_size" in self.overrides:
            return int(self.overrides["native_size"])
        return int(self.transformer_config.get("sample_size", 32)) * self.latent_scale

    @property
    def max_side(self) -> int:
        return int(self.overrides.get("max_side", self.native_size * 2))


def read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} does not hold a JSON object")
    return data


def guidance_interval(value: Any) -> tuple[float, float]:
    """linea.json's `guidance_interval`: two noise levels, 0 <= low < high <= 1."""
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        low, high = float(value[0]), float(value[1])
        if 0.0 <= low < high <= 1.0:
            return low, high
    raise ValueError(f"guidance_interval must be two noise levels [low, high] with "
                     f"0 <= low < high <= 1, not {value!r}")


def _contrast_rule(value: Any, form: str, literal: bool = False) -> ContrastRule:
    """One rule of `contrast_guidance`; `literal` reads the rewrites as plain phrases (the first
    form of the entry) rather than regular expressions."""
    if not isinstance(value, dict) or set(value) - {"about"} != {"scale", "rewrites"}:
        raise ValueError(f"{form}, not {value!r}")
    scale, rewrites, about = value["scale"], value["rewrites"], value.get("about", "")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"{form}; its scale is {scale!r}")
    if not isinstance(about, str):
        raise ValueError(f"{form}; its about is {about!r}")
    pairs = []
    for pair in rewrites if isinstance(rewrites, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2
                and all(isinstance(p, str) and p.strip() for p in pair)):
            raise ValueError(f"{form}; each rewrite is two non-empty texts, not {pair!r}")
        pattern, replacement = pair[0].strip(), pair[1].strip()
        if literal:
            pattern = " ".join(re.escape(word) for word in pattern.split())
            replacement = replacement.replace("\\", "\\\\")
        try:
            compiled = _whole_words(pattern)
        except re.error as error:
            raise ValueError(f"{form}; the rewrite pattern {pattern!r} is not a regular "
                             f"expression ({error})") from None
        if re.fullmatch(pattern, "") is not None:
            raise ValueError(f"{form}; the rewrite pattern {pattern!r} matches empty text")
        try:
            compiled.sub(replacement, "")  # checks the replacement's group names
        except (re.error, IndexError) as error:
            raise ValueError(f"{form}; the replacement {replacement!r} does not fit the "
                             f"pattern {pattern!r} ({error})") from None
        pairs.append((pattern, replacement))
    if not pairs:
        raise ValueError(f"{form}; it has no rewrites")
    return ContrastRule(float(scale), tuple(pairs), about.strip())


def contrast_guidance(value: Any) -> ContrastGuidance:
    """linea.json's `contrast_guidance`: {"interval": [low, high], "rules": [{"scale": > 0,
    "rewrites": [[pattern, replacement], ...], "about": optional plain words}, ...]}, or the
    first form with one rule of plain phrases: {"scale", "interval", "rewrites", "about"}."""
    form = ('contrast_guidance must be {"interval": [low, high], "rules": [{"scale": a number '
            'above 0, "rewrites": [["pattern", "replacement"], ...], optionally "about": "what '
            'it steers away from"}, ...]}')
    if isinstance(value, dict) and "rules" not in value and "scale" in value:
        literal = True  # the first form: one rule, its rewrites plain phrases
        rules = [{k: v for k, v in value.items() if k != "interval"}]
        if set(value) - {"about"} != {"scale", "interval", "rewrites"}:
            raise ValueError(f"{form}, not {value!r}")
    elif isinstance(value, dict) and set(value) == {"interval", "rules"}:
        literal, rules = False, value["rules"]
        if not isinstance(rules, list) or not rules:
            raise ValueError(f"{form}; its rules are {rules!r}")
    else:
        raise ValueError(f"{form}, not {value!r}")
    try:
        interval = guidance_interval(value["interval"])
    except ValueError:
        raise ValueError(f"{form}; its interval {value['interval']!r} is not two noise levels "
                         f"0 <= low < high <= 1") from None
    return ContrastGuidance(interval, tuple(_contrast_rule(r, form, literal) for r in rules))


def contrast_json(contrast: ContrastGuidance) -> dict[str, Any]:
    """`contrast` as linea.json writes it (read back by `contrast_guidance`)."""
    return {"interval": [float(v) for v in contrast.interval],
            "rules": [{"scale": rule.scale, "rewrites": [list(pair) for pair in rule.rewrites],
                       **({"about": rule.about} if rule.about else {})}
                      for rule in contrast.rules]}


MAX_CANDIDATES = 8


def candidate_count(value: Any) -> int:
    """linea.json's `candidates` (or a request's): a whole number from 1 to MAX_CANDIDATES."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CANDIDATES:
        raise ValueError(f"candidates must be a whole number from 1 to {MAX_CANDIDATES}, "
                         f"got {value!r}")
    return value


def family_with_overrides(family: Family, overrides: dict[str, Any]) -> Family:
    """linea.json may rename the family and change its defaults (the in-house model does)."""
    fields: dict[str, Any] = {}
    for key in ("default_steps", "default_guidance", "complex_human_instruction", "knows",
                "max_tokens"):
        if key in overrides:
            fields[key] = overrides[key]
    if "guidance_interval" in overrides:
        if not family.uses_cfg:
            raise ValueError(f"guidance_interval applies to models sampled with classifier-free "
                             f"guidance; a {family.label} model takes none, so remove the entry")
        fields["guidance_interval"] = guidance_interval(overrides["guidance_interval"])
    if "contrast_guidance" in overrides:
        if not set(family.samplers) <= set(FLOW_SAMPLERS):
            raise ValueError(f"contrast_guidance applies to flow-sampled models; a "
                             f"{family.label} model is not one, so remove the entry")
        fields["contrast"] = contrast_guidance(overrides["contrast_guidance"])
    if "candidates" in overrides:
        fields["candidates"] = candidate_count(overrides["candidates"])
    if "family" in overrides:
        fields["key"] = str(overrides["family"])
        fields["label"] = str(overrides.get("label", overrides["family"]))
    return Family(**{**family.__dict__, **fields}) if fields else family
