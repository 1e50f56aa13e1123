"""Layer-wise distillation targets for QAT: the float activation at every point the student quantizes.

Ten logits per image under-determine millions of rounding choices, and a student
fitted to them alone drifts from the float model outside the train split. Layer
outputs carry thousands of targets per image (as in AdaRound and BRECQ). They come
from the student's own graph with every quantizer off (the same ops, BatchNorm
folded the same way: the float model to 1e-5), so each quantized activation has
its float counterpart by module name.
"""

from __future__ import annotations

from edgetl.export.qat import graph


class FeatureTargets:
    """Forward hooks on the student's activation quantizers and on the float graph's, paired by name."""

    def __init__(self, student, float_model, image_size: tuple[int, int], device):
        from torchao.quantization.pt2e import disable_fake_quant

        self.float_graph = graph.prepare(float_model, image_size).to(device)
        self.float_graph.apply(disable_fake_quant)
        graph.observers(self.float_graph, False)
        graph.eval_mode(self.float_graph)
        self.float_graph.requires_grad_(False)
        names = {id(m): n for n, m in student.named_modules()}
        wanted = [names[id(m)] for m in graph.activation_quantizers(student)]
        float_modules = dict(self.float_graph.named_modules())
        self.student_out: dict[str, object] = {}
        self.float_out: dict[str, object] = {}
        modules = dict(student.named_modules())
        for name in wanted:
            modules[name].register_forward_hook(self._keep(self.student_out, name))
            float_modules[name].register_forward_hook(self._keep(self.float_out, name))
        self.names = wanted

    @staticmethod
    def _keep(store: dict, name: str):
        def hook(_module, _inputs, output):
            store[name] = output
        return hook

    def float_logits(self, inputs):
        """The float graph on `inputs` (its activations kept for `loss`), no gradient."""
        import torch

        with torch.no_grad():
            return self.float_graph(inputs)

    def loss(self):
        """Mean over quantized points of the student's error power relative to the float activation's power."""
        import torch

        terms = []
        for name in self.names:
            student, target = self.student_out.get(name), self.float_out.get(name)
            if student is None or target is None or student.shape != target.shape:
                continue
            target = target.float()
            terms.append(((student.float() - target) ** 2).mean() / (target ** 2).mean().clamp_min(1e-12))
        self.student_out.clear()
        self.float_out.clear()
        return torch.stack(terms).mean()
