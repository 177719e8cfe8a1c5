"""A serving loop that is not fdoverlap's: transformers' continuous batching on random Llama weights.

Llama-3-8B shapes (hidden 4096, 32 heads, 8 KV heads, FFN 14336, vocab 128256) with --layers decoder
layers, random weights from the config (nothing is downloaded), --requests prompts of random tokens,
greedy decoding of exactly --new-tokens tokens each (no EOS), through `generate_batch` with
`ContinuousBatchingConfig(use_async_batching=...)`. It emits no NVTX of its own: profile it as is to
find its steps from CUDA activity, or under `fdoverlap instrument --preset transformers`.

Runs on a GPU host with PyTorch and transformers 5.x (not with the paddle bundle's PYTHONPATH).
Prints one JSON line: what ran, the tokens it produced and how long generate_batch took.

    python3 benchmarks/foreign_loop.py --mode sync|async [--layers 16] [--requests 32] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time


def _cb_config_class():
    """ContinuousBatchingConfig wherever this transformers keeps it."""
    import transformers

    for where in ("transformers", "transformers.generation", "transformers.generation.configuration_utils"):
        module = sys.modules.get(where) or __import__(where, fromlist=["ContinuousBatchingConfig"])
        found = getattr(module, "ContinuousBatchingConfig", None)
        if found is not None:
            return found
    raise SystemExit(f"transformers {transformers.__version__} has no ContinuousBatchingConfig (needs 5.x)")


def _model(layers: int, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_attention_heads=32,
        num_key_value_heads=8,
        num_hidden_layers=layers,
        vocab_size=128256,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 on the GPU: no fp32 copy, no host-side init
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("sync", "async"), default="sync", help="use_async_batching off or on")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--prompt-len", default="64..256", help="prompt lengths, uniform in LO..HI")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-warmup", action="store_true", help="skip generate_batch's CUDA graph warm-up")
    args = p.parse_args()

    import torch
    import transformers
    from transformers import GenerationConfig

    if not torch.cuda.is_available():
        raise SystemExit("foreign_loop: needs a CUDA GPU")
    lo, hi = (int(x) for x in args.prompt_len.split(".."))
    g = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(lo, hi + 1, (args.requests,), generator=g).tolist()
    prompts = [torch.randint(3, 128000, (n,), generator=g).tolist() for n in lengths]

    t0 = time.perf_counter()
    model = _model(args.layers, args.seed)
    built_s = time.perf_counter() - t0
    generation = GenerationConfig(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
    generation.eos_token_id = None  # continuous batching then stops on length alone
    params = inspect.signature(model.generate_batch).parameters
    kwargs = {"generation_config": generation, "progress_bar": False}
    if "continuous_batching_config" in params:
        kwargs["continuous_batching_config"] = _cb_config_class()(use_async_batching=args.mode == "async")
    else:  # before transformers 5.3 it was a keyword of generate_batch
        kwargs["use_async_batching"] = args.mode == "async"
    if "warmup" in params:
        kwargs["warmup"] = not args.no_warmup

    torch.cuda.synchronize()
    t1 = time.perf_counter()
    results = model.generate_batch(prompts, **kwargs)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t1
    tokens = sum(len(r.generated_tokens) for r in results.values())
    print(
        json.dumps(
            {
                "mode": args.mode,
                "layers": args.layers,
                "requests": args.requests,
                "finished": len(results),
                "new_tokens": args.new_tokens,
                "tokens": tokens,
                "prompt_tokens": sum(lengths),
                "build_s": round(built_s, 3),
                "generate_s": round(seconds, 3),
                "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
