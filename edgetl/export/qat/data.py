"""What a QAT run trains on and is judged by: the run's own splits, the float teacher, its validation answers.

The train split is rebuilt from the run's data folder and saved configuration
and must match the split digest recorded at training time: QAT on other images
than the run's would make its validation figures meaningless. The float model is
the teacher (its logits are the distillation targets on every augmented batch)
and the reference the student's agreement is measured against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from edgetl.contract.run_dir import RunDir
from edgetl.errors import BadInputError
from edgetl.export.qat import graph
from edgetl.train import checkpoint
from edgetl.train.distributed import DistInfo
from edgetl.train.evaluate import Normalizer
from edgetl.train.loader import train_loader

VALIDATION_BATCH = 64


@dataclass
class QatData:
    run: RunDir
    model_name: str
    head: str
    image_size: tuple[int, int]
    teacher: object  # float nn.Module on the device, eval mode
    loader: object
    sampler: object
    normalizer: Normalizer
    val_pixels: np.ndarray  # (N, 3, H, W) uint8, evaluation preprocessing
    val_labels: np.ndarray
    val_teacher: np.ndarray  # float top-1 on val
    val_teacher_logits: np.ndarray
    steps_per_epoch: int
    train_images: int
    float_accuracy: float

    @classmethod
    def load(cls, run: RunDir, cfg, settings, dist: DistInfo, device) -> "QatData":
        import torch

        from edgetl.backbones import get_spec

        data, cfg, preprocess = _run_splits(run, cfg, settings)
        saved = checkpoint.load(run.best)
        teacher = _frozen_teacher(saved, len(data.classes), device)
        loader, sampler = train_loader(data.train, cfg, dist, device.type)
        steps = len(loader) if settings.max_steps is None else min(len(loader), settings.max_steps)
        normalizer = Normalizer(preprocess, device, channels_last=False)
        val_pixels = np.stack([data.val[i][0].numpy() for i in range(len(data.val))])  # (N, 3, H, W)
        val_labels = np.asarray(data.val.labels, np.int64)
        with torch.no_grad():
            val_teacher_logits = _logits(teacher, normalizer, val_pixels, VALIDATION_BATCH)
        val_teacher = val_teacher_logits.argmax(1)
        return cls(run=run, model_name=saved["model_name"], head=get_spec(saved["model_name"]).head,
                   image_size=tuple(preprocess.size), teacher=teacher, loader=loader, sampler=sampler,
                   normalizer=normalizer, val_pixels=val_pixels, val_labels=val_labels, val_teacher=val_teacher,
                   val_teacher_logits=val_teacher_logits,
                   steps_per_epoch=max(1, steps), train_images=len(data.train),
                   float_accuracy=round(float((val_teacher == val_labels).mean()), 6))

    def float_export_model(self):
        """A CPU float copy of the teacher in the form every exporter converts (constant SAME pads)."""
        import copy

        from edgetl.backbones.static_padding import static_same_padding

        model = copy.deepcopy(self.teacher).cpu().eval()
        # The teacher is frozen, its copy must train (QatSettings.head_lr_mult decides the head).
        model.requires_grad_(True)
        return static_same_padding(model, (1, 3, *self.image_size))

    def describe(self) -> str:
        return (f"{self.model_name}, {self.train_images} train images x {self.steps_per_epoch} steps per epoch, "
                f"{len(self.val_labels)} validation images, float val accuracy {self.float_accuracy:.3f}")

    def train_batches(self, epoch: int, mixup: float = 0.0):
        """(normalised augmented inputs, float teacher logits), `steps_per_epoch` of them.

        With `mixup` > 0 each batch is blended with a shuffled copy of itself (one Beta(mixup, mixup)
        weight per image); the teacher's logits on the blend are the target. The draws come from a
        generator seeded by (epoch, step), never torch's global RNG, so a resumed run draws the same.
        """
        import torch

        self.sampler.set_epoch(epoch)
        for step, (pixels, _labels) in enumerate(self.loader):
            if step >= self.steps_per_epoch:
                return
            inputs = self.normalizer(pixels)
            if mixup > 0 and len(inputs) > 1:
                weight, order = _mixup_draws(len(inputs), mixup, epoch * 1_000_003 + step)
                weight = weight.view(-1, 1, 1, 1).to(inputs.device)
                inputs = weight * inputs + (1 - weight) * inputs[order.to(inputs.device)]
            with torch.no_grad():
                teacher_logits = self.teacher(inputs)
            yield inputs, teacher_logits

    def calibrate(self, student, images: int, autocast) -> None:
        """Initial ranges from `images` train images (no gradient), before any step."""
        import torch

        graph.eval_mode(student)
        graph.observers(student, True)
        seen = 0
        self.sampler.set_epoch(10_000)  # a draw of its own, not epoch 0's order
        with torch.no_grad(), autocast():
            for pixels, _labels in self.loader:
                student(self.normalizer(pixels))
                seen += len(pixels)
                if seen >= images:
                    break

    def validate(self, student, autocast) -> dict:
        """Student top-1 and agreement with float on the validation split; ranges fixed while measuring."""
        import torch

        graph.observers(student, False)
        graph.eval_mode(student)
        with torch.no_grad(), autocast():
            logits = _logits(student, self.normalizer, self.val_pixels, VALIDATION_BATCH)
        predicted = logits.argmax(1)
        noise = float(np.sum((logits - self.val_teacher_logits) ** 2))
        return {"accuracy": round(float((predicted == self.val_labels).mean()), 6),
                "agreement": round(float((predicted == self.val_teacher).mean()), 6),
                # logits' signal-to-quantization-noise ratio against float: how close, not only whether top-1 flips
                "sqnr_db": round(10 * float(np.log10(np.sum(self.val_teacher_logits ** 2) / max(noise, 1e-12))), 2),
                "images": int(len(self.val_labels))}


def _run_splits(run: RunDir, cfg, settings):
    """(prepared data, cfg at QAT's batch size, preprocessing) of the run's own splits, or why not."""
    from edgetl.data.prepare import prepare_data
    from edgetl.data.splits import split_digest

    recorded = run.read_dataset()
    root = run.existing_data_root("QAT's training images (the run's train split)")
    cfg = dataclasses.replace(cfg, data=str(root), batch_size=settings.batch_size)
    preprocess = run.read_preprocess()
    data = prepare_data(cfg, preprocess)
    if split_digest(data.splits) != recorded.get("split_digest"):
        raise BadInputError(f"the data folder {cfg.data} no longer holds the splits {run.path} was trained on",
                            "restore the data folder, or fine-tune a new run before QAT")
    return data, cfg, preprocess


def _frozen_teacher(saved: dict, num_classes: int, device):
    """The float model of the run's best checkpoint, on the device, eval mode, no gradients."""
    from edgetl.backbones import create_model

    teacher = create_model(saved["model_name"], num_classes=num_classes, pretrained=False)
    teacher.load_state_dict(saved["model"])
    teacher.eval().to(device)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def _mixup_draws(n: int, alpha: float, seed: int):
    """n Beta(alpha, alpha) weights (as X / (X + Y), X and Y Gamma(alpha)) and a permutation of n."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    gammas = torch._standard_gamma(torch.full((2, n), float(alpha)), generator=generator)
    return gammas[0] / gammas.sum(0), torch.randperm(n, generator=generator)


def _logits(model, normalizer: Normalizer, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    import torch

    parts = []
    for start in range(0, len(pixels), batch_size):
        parts.append(model(normalizer(torch.from_numpy(pixels[start:start + batch_size]))).float().cpu().numpy())
    return np.concatenate(parts)
