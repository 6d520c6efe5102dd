"""Training profiles as typed, immutable config objects, kept apart from the code that runs them.

A profile is data, not a branch in the trainer: `smoke` and the two NGC recipes differ only in the
values below. Overrides from the CLI or an Airflow Param produce a new config with `replace`, and the
resolved config is echoed at start and saved beside the checkpoints, so a model directory always
says how it was trained.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.contracts.names import CONFIG_FILE
from pipeline.files import write_json

AmpDtype = Literal["float16", "bfloat16"]
WeightInit = Literal["fan_in", "fan_out"]


@dataclass(frozen=True)
class TrainConfig:
    profile: str
    epochs: int
    batch_size: int  # per replica (per GPU), as NVIDIA counts it
    image_size: int = 224
    # Which counts the validator expects of the data: real ILSVRC-2012, or the sample's manifest.
    dataset: Literal["imagenet", "sample"] = "imagenet"
    # LR = base_lr x global batch / lr_batch_denominator (0.256 per 256 images), linear warmup, cosine to 0.
    base_lr: float = 0.256
    lr_batch_denominator: int = 256
    warmup_epochs: float = 8.0
    momentum: float = 0.875
    label_smoothing: float = 0.1
    # L2 on conv and dense kernels only, added to the loss as NVIDIA does (wd x sum(w^2) / 2).
    weight_decay: float = 1.0 / 32768
    mixup_alpha: float = 0.0
    amp: bool = True
    amp_dtype: AmpDtype = "float16"
    # None: dynamic loss scaling. A number: start there and never grow (NVIDIA's accuracy runs use 128).
    static_loss_scale: float | None = 128.0
    xla: bool = True
    weight_init: WeightInit = "fan_in"
    num_classes: int = 1000
    # Cap on optimizer steps (the schedule then spans this many); None means epochs x steps per epoch.
    steps: int | None = None
    checkpoint_every: int = 500  # K: a kill -9 loses at most this many steps
    keep_checkpoints: int = 3
    log_every: int = 50
    cache_data: bool = False  # keep the serialized records in memory (the small sample only)
    shuffle_buffer: int = 10_000
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "image_size", "checkpoint_every", "log_every", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be at least 1, not {self.steps}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 (ResNet50 downsamples 32x), not {self.image_size}")
        if self.weight_init not in ("fan_in", "fan_out"):
            raise ValueError(f"weight_init must be fan_in or fan_out, not {self.weight_init!r}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be float16 or bfloat16, not {self.amp_dtype!r}")

    @property
    def dtype_policy(self) -> str:
        return f"mixed_{self.amp_dtype}" if self.amp else "float32"

    def peak_lr(self, world_size: int) -> float:
        return self.base_lr * self.batch_size * world_size / self.lr_batch_denominator

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with the given fields changed; None values mean 'not overridden'."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, model_dir: Path) -> Path:
        return write_json(Path(model_dir) / CONFIG_FILE, self.to_dict())

    @classmethod
    def load(cls, model_dir: Path) -> TrainConfig:
        path = Path(model_dir) / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no training config here; is this a model directory?") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# NVIDIA DeepLearningExamples, resnet50v1.5 DGXA100_RN50_AMP_{90,250}E.sh: batch 256 per GPU, AMP with
# static loss scale 128, XLA, cosine LR 0.256 per 256 images with 8 warmup epochs, momentum 0.875,
# label smoothing 0.1, weight decay 3.0517578125e-05 (1/32768), fan_in init; mixup 0.2 at 250 epochs.
PROFILES: dict[str, TrainConfig] = {
    "ngc-90e": TrainConfig(profile="ngc-90e", epochs=90, batch_size=256),
    "ngc-250e": TrainConfig(profile="ngc-250e", epochs=250, batch_size=256, mixup_alpha=0.2),
    # The generated sample at 32 px on a CPU: float32 (CPUs gain nothing from float16), no XLA (XLA:CPU
    # makes this step slower, docs/benchmarks.md), checkpoints often enough that a killed run loses little.
    # A quarter of NVIDIA's LR, 0.064 per 256 images: at 32 px the last stages see 2x2 and 1x1 maps, and
    # at 0.256 the logits grew to hundreds within the warmup (single-step losses of 10-50) and a run could
    # end anywhere between 61 and 98 % top-1. Twenty epochs with three of warmup: --np 2 (global batch 64,
    # peak LR 0.016) gets 300 steps. Validated runs: docs/benchmarks.md.
    "smoke": TrainConfig(
        profile="smoke",
        dataset="sample",
        epochs=20,
        batch_size=32,
        image_size=32,
        base_lr=0.064,
        warmup_epochs=3.0,
        amp=False,
        static_loss_scale=None,
        xla=False,
        checkpoint_every=50,
        log_every=10,
        cache_data=True,
        shuffle_buffer=2048,
        seed=1,
    ),
    # A monthly refresh from a good start (`--init-from ngc|champion`): NVIDIA's 90-epoch recipe, shortened.
    # Not from a DeepLearningExamples script (NVIDIA publishes no fine-tuning recipe for it); common
    # fine-tuning practice scaled from ngc-90e: a tenth of its peak LR (0.0256 per 256 images; the weights
    # are already near a minimum), 1 warmup epoch instead of 8 (enough to settle BN statistics and the
    # momentum buffer, which start fresh), 5 epochs. Not validated on ImageNet; on the sample (docs/ngc.md,
    # bench/warm_start.py) a tenth of smoke's LR plateaued below a from-scratch run, smoke's own LR matched it.
    "finetune": TrainConfig(profile="finetune", epochs=5, batch_size=256, base_lr=0.0256, warmup_epochs=1.0),
}


def get_profile(name: str) -> TrainConfig:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


def resolve(profile: str, **overrides: Any) -> TrainConfig:
    """The recipe `rn50 train` trains with and saves as config.json: the profile with a run's overrides
    (None: the profile's value). The DAG's check_changes compares it with the champion's before training."""
    return get_profile(profile).replace(**overrides)
