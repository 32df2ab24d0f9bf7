"""How much a linea-tiny folder listens to its prompt.

    python -m models.tiny.diagnose [FOLDER] [--scenes 128]

Renders fresh training scenes, encodes them with the folder's autoencoder, noises them, and
compares the transformer's flow-matching loss with each scene's own caption against another
scene's caption, the empty caption, and the own caption with its shape words (or its colour
words) swapped for others, or (on the scenes whose caption names one) its relation flipped, or
(on those naming two, three or four of a shape) that number replaced by the next.
The relative gaps, (other - right) / other, say how much the caption helps: against the empty
caption near 0 means the conditional prediction is hardly better than the unconditional one
(guidance then has little to amplify); the swapped ones say at which noise levels the model
reads which kind of word. Also reports the entropy of the cross-attention over caption tokens
(log of the token count means uniform: it reads no particular word).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from models.tiny import build
from models.tiny.captions import PLURALS, RELATION_PHRASES, RELATION_WORDS
from models.tiny.render import render_batch
from models.tiny.scenes import COLOURS, OPPOSITE, SHAPES
from models.tiny.split import training_examples

DEFAULT = Path(__file__).resolve().parents[2] / "assets" / "models" / "linea-tiny"


def _load(folder: Path):
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import Gemma2Model

    vae = AutoencoderDC.from_pretrained(folder / "vae", torch_dtype=torch.float32).eval()
    transformer = SanaTransformer2DModel.from_pretrained(
        folder / "transformer", torch_dtype=torch.float32).eval()
    text_encoder = Gemma2Model.from_pretrained(
        folder / "text_encoder", torch_dtype=torch.float32).eval()
    return vae, transformer, text_encoder


def _rotation(words: list[str], by: int = 3) -> dict[str, str]:
    return {w: words[(i + by) % len(words)] for i, w in enumerate(words)}


def _opposite_words() -> dict[str, str]:
    """Each relation word (captions.RELATION_WORDS) to the word of the opposite relation's
    phrase in the same place, so the phrasing is kept: "to the left of" <-> "to the right of",
    "over" <-> "under"; "beneath" (third of three) -> "above"."""
    def word(phrase: str) -> str:
        return next(w for w in phrase.split() if w in RELATION_WORDS)

    table = {}
    for relation, phrases in RELATION_PHRASES.items():
        opposite = RELATION_PHRASES[OPPOSITE[relation]]
        for i, phrase in enumerate(phrases):
            table[word(phrase)] = word(opposite[i % len(opposite)])
    return table


_SWAPS = {
    "shape": {**_rotation(list(SHAPES)),
              **{PLURALS[a]: PLURALS[b] for a, b in _rotation(list(SHAPES)).items()}},
    "colour": _rotation(list(COLOURS)),
    "relation": _opposite_words(),
    "count": {"two": "three", "three": "four", "four": "two"},
}
# Kinds whose swap leaves some captions unchanged: their gaps are over the changed ones alone.
_PARTIAL = ("relation", "count")


def swapped(caption: str, kind: str) -> str:
    """`caption` with every shape word ("shape", plurals kept) or colour word ("colour")
    replaced by another of its kind (a fixed rotation, so never by itself), its relation
    word by the opposite one ("relation"), or its number words two / three / four by the next
    ("count": "four" -> "two"; "one" and "a pair of" kept)."""
    table = _SWAPS[kind]
    pattern = r"\b(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True)) + r")\b"
    return re.sub(pattern, lambda m: table[m.group(1)], caption)


def diagnose(folder: Path, scenes: int = 128, seed: int = 5) -> dict:
    vae, transformer, text_encoder = _load(folder)
    return {"folder": str(folder), **caption_gaps(vae, transformer, text_encoder, scenes, seed)}


@torch.no_grad()
def caption_gaps(vae, transformer, text_encoder, scenes: int = 128, seed: int = 5) -> dict:
    """The report for modules in memory (fp32, CPU; `vae.config.scaling_factor` set): losses
    with the right, another scene's and the empty caption at noise 0.5 / 0.7 / 0.9, their
    relative gaps, and the cross-attention entropy."""
    tokenizer = build.build_tokenizer()
    examples = training_examples(scenes, seed)
    images = render_batch([e.scene for e in examples], build.NATIVE_SIZE, torch.device("cpu"))
    latents = vae.encode(images * 2 - 1).latent * vae.config.scaling_factor
    tokens = tokenizer([e.caption for e in examples], padding="max_length",
                       max_length=build.MAX_CAPTION_TOKENS, truncation=True, return_tensors="pt")
    empty = tokenizer([""] * scenes, padding="max_length", max_length=build.MAX_CAPTION_TOKENS,
                      return_tensors="pt")
    texts = {kind: [swapped(e.caption, kind) for e in examples]
             for kind in _SWAPS}
    swaps = {kind: tokenizer(captions, padding="max_length", max_length=build.MAX_CAPTION_TOKENS,
                             truncation=True, return_tensors="pt")
             for kind, captions in texts.items()}
    # Only captions that name a relation (a count of two or more) change with "relation"
    # ("count"): its gap is over those alone.
    changed = {kind: torch.tensor([other != e.caption
                                   for other, e in zip(texts[kind], examples, strict=True)])
               for kind in _PARTIAL}
    entropies: list[float] = []

    def attention_entropy(module, args, kwargs, _output) -> None:
        hidden, text = args[0], kwargs["encoder_hidden_states"]
        heads = module.heads
        q = module.to_q(hidden).unflatten(-1, (heads, -1)).transpose(1, 2)
        k = module.to_k(text).unflatten(-1, (heads, -1)).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        probs = (logits + kwargs["attention_mask"].unsqueeze(1)).softmax(-1)
        entropies.append(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()))

    hooks = [block.attn2.register_forward_hook(attention_entropy, with_kwargs=True)
             for block in transformer.transformer_blocks]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=generator)
    shuffled = torch.roll(torch.arange(scenes), 1)
    report: dict = {"scenes": scenes, "relation_scenes": int(changed["relation"].sum()),
                    "count_scenes": int(changed["count"].sum()), "relative_gap": {}, "loss": {}}
    for sigma in (0.5, 0.7, 0.9):
        noisy = (1 - sigma) * latents + sigma * noise
        timestep = torch.full((scenes,), sigma * 1000)
        losses, per_scene = {}, {}
        for name, ids, mask in (
            ("right", tokens.input_ids, tokens.attention_mask),
            ("shuffled", tokens.input_ids[shuffled], tokens.attention_mask[shuffled]),
            ("empty", empty.input_ids, empty.attention_mask),
            *((kind, t.input_ids, t.attention_mask) for kind, t in swaps.items()),
        ):
            entropies.clear()
            text = text_encoder(ids, attention_mask=mask)[0]
            pred = transformer(noisy, encoder_hidden_states=text, encoder_attention_mask=mask,
                               timestep=timestep).sample
            per_scene[name] = F.mse_loss(pred, noise - latents, reduction="none").mean((1, 2, 3))
            if name in _PARTIAL:
                if changed[name].any():
                    losses[name] = round(per_scene[name][changed[name]].mean().item(), 5)
                    losses[f"right_{name}"] = round(
                        per_scene["right"][changed[name]].mean().item(), 5)
            else:
                losses[name] = round(per_scene[name].mean().item(), 5)
            if name == "right":
                report.setdefault("cross_attention_entropy", {})[sigma] = round(
                    sum(entropies) / len(entropies), 3)
        report["loss"][sigma] = losses
        report["relative_gap"][sigma] = {
            other: round((losses[other] - losses["right"]) / losses[other], 4)
            for other in ("shuffled", "empty", "shape", "colour")}
        # On the scenes whose caption names a relation (a count of two or more), that relation
        # against the opposite (that count against the next). None when no scene's caption
        # names one.
        for kind in _PARTIAL:
            report["relative_gap"][sigma][kind] = round(
                (losses[kind] - losses[f"right_{kind}"]) / losses[kind], 4
            ) if changed[kind].any() else None
    for hook in hooks:
        hook.remove()
    words = tokens.attention_mask.sum(1).float().mean().item()
    report["uniform_entropy"] = round(math.log(words), 3)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT)
    parser.add_argument("--scenes", type=int, default=128)
    args = parser.parse_args(argv)
    print(json.dumps(diagnose(args.folder, args.scenes), indent=2))


if __name__ == "__main__":
    main()
