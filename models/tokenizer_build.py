"""A small Gemma-style tokenizer built on this machine, for replicas of Gemma-2 text encoders.

The real Gemma tokenizer cannot be downloaded here, and replicas only need one that behaves like it:
byte-pair merges over "▁"-marked words, a fallback to the 256 byte tokens so any text encodes
without unknown tokens, `<pad>`=0 / `<eos>`=1 / `<bos>`=2 / `<unk>`=3 / `<mask>`=4 as in Gemma,
and a `<bos>` put in front of every sequence. The merges are learned from the corpus below, so the
tokenizer is the same every time it is built.
"""

from __future__ import annotations

import functools
import json

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import GemmaTokenizer

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
VOCAB_SIZE = 1024

# Words of the kind people type into an image generator, plus the words of SANA's "complex human
# instruction" prefix, so that common prompts encode to whole-word tokens rather than bytes.
CORPUS = """
a an the of and or with without in on at by for from to into over under above below behind
near between through across around beside inside outside young old small large tiny huge tall
short wide narrow bright dark soft hard warm cold quiet loud happy sad calm wild gentle ancient
modern futuristic vintage classic cute beautiful elegant simple detailed intricate realistic
photo photograph photography portrait landscape painting drawing sketch illustration render
watercolor oil acrylic pencil charcoal ink digital art artwork concept poster cover comic anime
cartoon style studio lighting light shadow sunlight moonlight sunset sunrise dawn dusk night day
morning evening noon golden hour blue red green yellow orange purple pink brown black white gray
silver gold colorful vivid pastel neon muted monochrome cat dog bird horse fox wolf bear lion
tiger rabbit owl fish whale dragon unicorn robot astronaut knight wizard witch girl boy woman
man child person people family friend city street road bridge building house castle tower
temple church village forest tree trees flower flowers garden field meadow mountain mountains
hill valley river lake sea ocean beach island desert snow rain fog mist cloud clouds sky star
stars moon sun planet space galaxy nebula fire water ice stone rock wood metal glass crystal
paper fabric leather table chair window door room kitchen library cafe market shop train car
boat ship airplane bicycle book lamp candle cup tea coffee bread cake fruit apple food wearing
holding standing sitting walking running flying floating swimming dancing reading smiling
looking playing sleeping eating drinking glowing shining reflecting wearing hat dress coat
glasses scarf boots crown armor wings tail eyes face hair hands background foreground center
close up wide angle view shot camera lens bokeh depth focus sharp blur high resolution quality
masterpiece cinematic dramatic atmosphere mood scene epic dreamy magical mysterious peaceful
cozy rustic urban rural tropical autumn winter spring summer leaves petals grass moss waves
reflection texture pattern shape line curve circle square triangle minimal abstract surreal
given user prompt generate enhanced version please follow instructions below you are an
assistant designed to generate superior images with best quality aesthetic detail coherence
composition each only output description if is already add details maintain original meaning
make sure that it not too long use key words create image describe color object action place
emotion enhance visual what how where when why who which this that these those it its they
them their there here is are was were be been being have has had do does did can could will
would should may might must shall one two three four five six seven eight nine ten many few
some all every no not very more most less least first last next new good great best little big
1 2 3 4 5 6 7 8 9 0 , . ! ? : ; ' " - ( ) / & % + = @ #
"""


@functools.cache  # training takes ~1 s; its result never changes
def _train_merges() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Learn BPE merges on the corpus; return the learned tokens (in id order) and the merges."""
    trainer_model = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_model.normalizer = normalizers.Replace(" ", "▁")  # as GemmaTokenizer normalises
    # Learn merges within words only (a word owns the "▁" before it), as Gemma's vocabulary does.
    trainer_model.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    reserved = [*SPECIAL_TOKENS, *BYTE_TOKENS]
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=reserved,
        show_progress=False,
        min_frequency=1,
    )
    lines = [" ".join(line.split()) for line in CORPUS.strip().splitlines()]
    trainer_model.train_from_iterator(lines, trainer=trainer)
    trained = trainer_model.get_vocab(with_added_tokens=False)
    in_id_order = sorted(trained, key=trained.__getitem__)
    learned = tuple(tok for tok in in_id_order if tok not in reserved)
    merges = tuple((a, b) for a, b in json.loads(trainer_model.to_str())["model"]["merges"])
    return learned, merges


def build_tokenizer() -> GemmaTokenizer:
    """A Gemma-style fast tokenizer with special ids as in Gemma and byte fallback for any text."""
    learned, merges = _train_merges()
    tokens = [*SPECIAL_TOKENS, *BYTE_TOKENS, *learned]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=list(merges),
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
    )
    tokenizer.model_max_length = 8192
    return tokenizer
