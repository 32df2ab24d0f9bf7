"""CUDA code paths: CUDA graphs, the 8-bit encoder on the GPU, the host-side embedding table.

These run only where a CUDA GPU is present (they are skipped on CPU-only machines, where the paths
they cover do not exist). Their last recorded run is bench/results/h100_cuda_tests.txt.
"""

import pytest
import torch

from runtime import Engine, GenerationRequest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("family", ["sana-600m", "sprint-600m"])
def test_cuda_graph_replay_matches_plain_calls(replica_dir, family):
    folder = replica_dir(family)
    request = GenerationRequest("a red circle", width=256, height=256, seed=4,
                                steps=4 if family == "sana-600m" else 2)
    graphed = Engine(folder, device="cuda", cuda_graphs=True)
    plain = Engine(folder, device="cuda", cuda_graphs=False)
    first = graphed.generate(request, previews=False)
    second = graphed.generate(request, previews=False)  # replayed from the captured graph
    reference = plain.generate(request, previews=False)
    assert graphed._graphed is not None and not graphed._graphed.failed
    torch.testing.assert_close(first.latents, second.latents, atol=0, rtol=0)
    torch.testing.assert_close(second.latents, reference.latents, atol=2e-3, rtol=0)


def test_gpu_text_encoder_is_int8_with_the_embedding_table_in_host_memory(sana_tiny):
    import bitsandbytes as bnb

    from runtime.loader import HostEmbedding

    engine = Engine(sana_tiny, device="cuda")
    engine.load()
    encoder = engine._parts.text_encoder
    assert isinstance(encoder.get_input_embeddings(), HostEmbedding)
    assert encoder.get_input_embeddings().weight.device.type == "cpu"
    linears = [m for m in encoder.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert linears and linears[0].weight.device.type == "cuda"
    reference = Engine(sana_tiny, device="cuda", quantize_text_encoder=False)
    reference.load()
    a = engine.encode("a blue star", True, True)
    b = reference.encode("a blue star", True, True)
    valid = a.mask[0].bool()
    cosine = torch.nn.functional.cosine_similarity(a.embeds[0][valid].float(),
                                                   b.embeds[0][valid].float(), dim=-1)
    assert cosine.mean() > 0.99
    result = engine.generate(GenerationRequest("a blue star", width=256, height=256, steps=2))
    assert torch.isfinite(result.latents).all()
