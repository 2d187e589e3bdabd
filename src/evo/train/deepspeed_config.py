"""DeepSpeed config for a generation: ZeRO stage from evo's config, a torch optimizer, CPU-safe."""

from __future__ import annotations


def deepspeed_config(zero_stage: int, micro_batch: int, dtype: str) -> dict:
    cfg = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": zero_stage},
        # evo passes a torch AdamW: works on CPU and GPU alike, no fused-kernel build needed.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if dtype == "bfloat16":
        cfg["bf16"] = {"enabled": True}
    return cfg
