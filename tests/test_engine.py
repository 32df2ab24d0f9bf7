"""Engine behaviour: prompt cache, events, cancel, memory-plan fallback, the 8-bit encoder."""

import pytest
import torch
from PIL import Image

from runtime import (
    CancelledError,
    CancelToken,
    Engine,
    EventKind,
    GenerationRequest,
    MemoryPlan,
    OutOfMemoryError,
)


@pytest.fixture(scope="module")
def engine(sana_tiny):
    return Engine(sana_tiny, device="cpu")


def _count_encoder_calls(engine) -> list[int]:
    calls = [0]
    engine.load()
    engine._parts.text_encoder.register_forward_hook(
        lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_rerolling_the_seed_or_steps_does_not_rerun_the_text_encoder(engine):
    calls = _count_encoder_calls(engine)
    base = GenerationRequest("a blue star on a dark background", width=64, height=64, steps=2)
    engine.generate(base.with_changes(seed=1), previews=False)
    after_first = calls[0]
    assert after_first == 2  # prompt and negative prompt
    engine.generate(base.with_changes(seed=2), previews=False)
    engine.generate(base.with_changes(seed=3, steps=4), previews=False)
    assert calls[0] == after_first
    engine.generate(base.with_changes(prompt="a red square"), previews=False)
    assert calls[0] == after_first + 1


def test_events_arrive_in_order_with_previews(engine):
    events = []
    result = engine.generate(GenerationRequest("a green circle", width=128, height=128,
                                               steps=3, seed=5), on_event=events.append)
    kinds = [e.kind for e in events]
    assert kinds[-1] is EventKind.DONE and events[-1].result is result
    steps = [e for e in events if e.kind is EventKind.STEP]
    assert [(e.step, e.total) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(e.preview, Image.Image) for e in steps)
    assert kinds.index(EventKind.DECODING) > kinds.index(EventKind.STEP)
    assert result.images[0].size == (128, 128)
    assert set(result.timings) >= {"encode_s", "denoise_s", "decode_s", "total_s", "load_s"}


def test_cancel_takes_effect_within_one_step(engine):
    cancel = CancelToken()
    events = []

    def on_event(event):
        events.append(event)
        if event.kind is EventKind.STEP and event.step == 2:
            cancel.cancel()

    with pytest.raises(CancelledError):
        engine.generate(GenerationRequest("a cat", width=64, height=64, steps=10),
                        on_event=on_event, cancel=cancel)
    steps = [e.step for e in events if e.kind is EventKind.STEP]
    assert steps == [1, 2]
    assert events[-1].kind is EventKind.CANCELLED
    # the engine stays usable
    assert engine.generate(GenerationRequest("a cat", width=64, height=64, steps=1),
                           previews=False).images


def test_out_of_memory_retries_with_the_next_plan(sana_tiny, monkeypatch):
    engine = Engine(sana_tiny, device="cpu", plan=MemoryPlan.RESIDENT)
    engine.load()
    transformer = engine._parts.transformer
    original = transformer.forward
    failures = [1]

    def flaky_forward(*args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return original(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", flaky_forward)
    events = []
    result = engine.generate(GenerationRequest("a cat", width=64, height=64, steps=2),
                             on_event=events.append, previews=False)
    assert result.plan is MemoryPlan.RELEASE_ENCODER
    assert engine._parts.text_encoder is None
    assert any(e.kind is EventKind.PLAN for e in events)


def test_out_of_memory_on_the_last_plan_is_a_clear_error(sana_tiny, monkeypatch):
    engine = Engine(sana_tiny, device="cpu", plan=MemoryPlan.CPU_OFFLOAD)
    engine.load()

    def always_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(engine._parts.transformer, "forward", always_oom)
    with pytest.raises(OutOfMemoryError, match="does not fit"):
        engine.generate(GenerationRequest("a cat", width=64, height=64, steps=1))


def test_text_encoder_is_8bit_and_close_to_unquantised(sana_tiny):
    import bitsandbytes as bnb

    quantised = Engine(sana_tiny, device="cpu")
    reference = Engine(sana_tiny, device="cpu", quantize_text_encoder=False)
    quantised.load()
    reference.load()
    linears = [m for m in quantised._parts.text_encoder.modules()
               if isinstance(m, bnb.nn.Linear8bitLt)]
    assert linears, "no LLM.int8 layers in the text encoder"
    assert linears[0].weight.dtype == torch.int8
    prompt = "a red circle to the left of a blue square"
    a = quantised.encode(prompt, True, True)
    b = reference.encode(prompt, True, True)
    valid = a.mask[0].bool()
    cosine = torch.nn.functional.cosine_similarity(
        a.embeds[0][valid].float(), b.embeds[0][valid].float(), dim=-1)
    assert cosine.mean() > 0.99
    assert cosine.min() > 0.95


def test_out_of_memory_while_loading_retries_the_load_with_a_leaner_plan(sana_tiny,
                                                                          monkeypatch):
    from runtime import loader

    engine = Engine(sana_tiny, device="cpu", plan=MemoryPlan.RESIDENT)
    original = loader.load_text_encoder
    failures = [1]

    def flaky_load(*args, **kwargs):
        if failures[0]:
            failures[0] -= 1
            raise torch.OutOfMemoryError("simulated: out of memory while loading")
        return original(*args, **kwargs)

    monkeypatch.setattr(loader, "load_text_encoder", flaky_load)
    result = engine.generate(GenerationRequest("a cat", width=64, height=64, steps=1),
                             previews=False)
    assert result.plan is MemoryPlan.RELEASE_ENCODER and result.images
