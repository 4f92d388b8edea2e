"""CAM-family baselines computed by torchcam, as in the Poly-CAM paper (target: the model's last conv layer).

torchcam returns one map per image at the layer's resolution, min-max normalised (its default, as the paper
ran it); the harness upsamples it bilinearly to 224x224. ``Y_c`` below is the *logit* of the explained class
(torchcam's gradient methods back-propagate the raw model output).

Library behaviours the benchmark keeps (what the paper ran; each is covered by a test in
``tests/test_baselines.py``):

- Grad-CAM++: torchcam computes ``alpha = g^2 / (2 g^2 + sum_ab A g^3)`` with an in-place division on a
  boolean-indexed *copy*, so the division never happens and the weights are ``w_k = sum_ij g^2 ReLU(g)``.
  ``alpha="eq19"`` gives the paper's Eq. 19 / pytorch-grad-cam instead:
  ``alpha = g^2 / (2 g^2 + sum_ab(A) g^3)`` where ``g != 0``.
- Score-CAM family: channel masks are min-max normalised per channel and upsampled with
  ``align_corners=False`` (pytorch-grad-cam uses True); the score is the logit, and the channel weights are
  ``softmax_k(Y_c(x * M_k) - Y_c(x))``.
- IS-CAM: torchcam's integration coefficients accumulate, ``c_i = sum_{j<=i} j / N`` (0.1, 0.3, ..., 5.5 for
  N = 10), where the IS-CAM authors' go ``i / N`` up to 1.0.
- Layer-CAM: per-layer maps from torchcam; the fusion is the reference's (three shallowest layers scaled by
  ``tanh(2 cam / max cam)``, element-wise max), not torchcam's ``fuse_cams`` (which scales every layer).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from benchmark.core.cost import Cost
from benchmark.core.hooks import OutputRecorder
from benchmark.models.layers import output_channels

from .base import Method, MethodError, NotApplicable, register_method

# ---------------------------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """Run the body with the global RNG (CPU, and ``device`` if CUDA) seeded by ``seed``; restore it after.

    For library code that draws noise from the global generator (torchcam SS-CAM / Smooth Grad-CAM++,
    captum NoiseTunnel): the noise becomes a function of the seed without touching the caller's RNG state.
    """
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for idx in cuda:
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(seed)
        yield


def layer_channels(model, layer: str, size: int | None = None) -> int:
    """Output channels of ``layer`` (one hooked forward pass on a zero image, cached per network and layer)."""
    return output_channels(model.net, [layer], model.device, size or model.input_size)[0]


def activations_and_gradients(model, x: torch.Tensor, targets: torch.Tensor, layers: list[str]):
    """Outputs ``A_l`` of ``layers`` and ``dY/dA_l`` (``Y`` = logit of each image's target), ONE backward pass.

    Forward hooks keep the tensor each layer returns (its last call); ``torch.autograd.grad`` of the summed
    target logits with respect to all of them gives every layer's gradient at once (images are independent in
    eval mode, so summing over the batch gives each image its own gradient). Hooking outputs rather than
    registering backward hooks works with in-place ReLUs (VGG16), like torchcam does.
    """
    with OutputRecorder(model.net, layers, detach=False) as rec, torch.enable_grad():
        logits = model.net(x.detach().requires_grad_(True))  # parameters are frozen: the input carries grad
        score = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
        acts = [rec.outputs[name] for name in layers]
        grads = torch.autograd.grad(score, acts)
    return [a.detach() for a in acts], [g.detach() for g in grads]


def check_noise_params(method: Method) -> None:
    """The rules of a method averaging over noisy samples: ``num_samples >= 1``, ``std >= 0``."""
    method.require("num_samples", method.params["num_samples"] >= 1, ">= 1")
    method.require("std", method.params["std"] >= 0, ">= 0")


def minmax(maps: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-map ``(M - min) / (max - min + eps)`` over the last two dims (torchcam's normalisation)."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + eps)


# ---------------------------------------------------------------------------------------------- torchcam

class TorchcamMethod(Method):
    """One torchcam extractor on ``target_layers(model)`` for a batch, one class index per image.

    Gradient methods run the forward pass on an input that requires grad (the parameters are frozen, so
    without it no gradient would reach the hooked layer); score methods run it under ``no_grad`` inside the
    extractor's context (they hook the model input). ``per_image`` methods call torchcam once per image
    (see SS-CAM); ``draws_noise`` methods draw their noise from the global RNG seeded with ``self.seed`` (the
    caller's RNG state is restored).
    """

    family = "cam"
    extractor_name = ""
    per_image = False
    stochastic = False
    draws_noise: bool = False

    def target_layers(self, model) -> str | list[str]:
        return model.last_conv

    def extractor_kwargs(self, model) -> dict:
        return {}

    def combine(self, cams: list[torch.Tensor]) -> torch.Tensor:
        """torchcam returns one map list entry per target layer; a single-layer method keeps it."""
        return cams[0]

    def explain(self, model, x, targets):
        if not self.per_image:
            return self._explain(model, x, targets)
        return torch.cat([self._explain(model, x[i:i + 1], targets[i:i + 1]) for i in range(x.shape[0])])

    def _explain(self, model, x, targets):
        import torchcam.methods as tcm

        cls = getattr(tcm, self.extractor_name)
        rng = seeded_rng(self.seed, x.device) if self.draws_noise else contextlib.nullcontext()
        with rng, cls(model.net, target_layer=self.target_layers(model), **self.extractor_kwargs(model)) as extractor:
            if self.needs_grad:
                scores = model.net(x.detach().requires_grad_(True))
            else:
                with torch.no_grad():
                    scores = model.net(x)
            maps = extractor(class_idx=[int(t) for t in targets.tolist()], scores=scores)
        return self.combine(maps)


@register_method
class CAM(TorchcamMethod):
    """CAM (Zhou et al. 2016): ``L_c = sum_k w_{c,k} A_k`` with ``w`` the weights of the Linear after global average
    pooling, on the last conv layer (torchcam ``CAM``; no ReLU, min-max normalised).

    Defined only for models whose head is global average pooling + one Linear (ResNet50, EfficientNet-Lite0).
    VGG16's head is three Linear layers on the flattened 7x7 map, so CAM is *not applicable* to it: the harness
    reports it as such rather than substituting another method (the Poly-CAM paper reports no CAM for VGG16).
    """

    id = "cam"
    citation = "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016"
    extractor_name = "CAM"

    def check_applicable(self, model):
        if model.fc is None:
            raise NotApplicable(f"cam needs a global-average-pooling + Linear head; {model.name} has none "
                                "(VGG16's classifier is three Linear layers on the flattened 7x7 map)")

    def extractor_kwargs(self, model):
        return {"fc_layer": model.fc}

    def cost(self, model):
        return Cost(forward=1.0)


@register_method
class GradCAM(TorchcamMethod):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij dY_c/dA_k(i,j)`` with ``Y_c`` the
    logit of the target class, on the last conv layer (torchcam ``GradCAM``, min-max normalised)."""

    id = "gradcam"
    citation = "Selvaraju et al., Grad-CAM, ICCV 2017"
    needs_grad = True
    extractor_name = "GradCAM"


@register_method
class GradCAMpp(TorchcamMethod):
    """Grad-CAM++ (Chattopadhay et al. 2018): ``ReLU(sum_k w_k A_k)``, ``w_k = sum_ij alpha_kij ReLU(g_kij)``,
    ``g = dY_c/dA`` (logit), last conv layer, min-max normalised.

    ``alpha="torchcam"`` (paper protocol: torchcam ``GradCAMpp`` as the paper ran it): torchcam builds
    ``g^2 / (2 g^2 + sum_ab A g^3)`` but divides a boolean-indexed copy in place, so ``alpha = g^2`` and
    ``w_k = sum_ij g^2 ReLU(g)`` (the same line is in torchcam from ``cams/gradcam.py`` to 0.5).
    ``alpha="eq19"``: the Grad-CAM++ paper's closed form as in pytorch-grad-cam (the Poly-CAM paper's Eq. 19),
    ``alpha = g^2 / (2 g^2 + sum_ab(A_k) g^3 + eps)`` where ``g != 0`` else 0, computed here from the same
    hooked activation and gradient (one backward pass).
    """

    id = "gradcampp"
    citation = "Chattopadhay et al., Grad-CAM++, WACV 2018"
    needs_grad = True
    extractor_name = "GradCAMpp"
    paper_params = {"alpha": "torchcam"}

    def check_params(self):
        self.require("alpha", self.params["alpha"] in ("torchcam", "eq19"), "'torchcam' or 'eq19'")

    def explain(self, model, x, targets):
        alpha = self.params["alpha"]
        if alpha == "torchcam":
            return super().explain(model, x, targets)
        if alpha != "eq19":
            raise MethodError(f"gradcampp: alpha must be 'torchcam' or 'eq19', not {alpha!r}")
        (a,), (g,) = activations_and_gradients(model, x, targets, [model.last_conv])
        a, g = a.float(), g.float()
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
        alpha_ = torch.where(g != 0, g2 / (denom + 1e-8), torch.zeros_like(g))
        w = (alpha_ * torch.relu(g)).sum(dim=(2, 3), keepdim=True)
        return minmax(torch.relu((w * a).sum(dim=1)))


@register_method
class SmoothGradCAMpp(TorchcamMethod):
    """Smooth Grad-CAM++ (Omeiza et al. 2019), torchcam ``SmoothGradCAMpp`` on the last conv layer, its defaults
    ``num_samples=4``, ``std=0.3`` (Gaussian noise on the normalised input; the paper gives no parameters).

    torchcam: ``alpha = mean_n g_n^2 / (2 mean_n g_n^2 + sum_ab A mean_n g_n^3)`` over the noisy samples,
    ``w_k = sum_ij alpha ReLU(g_N)`` with ``g_N`` the *last* sample's gradient, and the map combines ``w`` with
    the activation of the last noisy forward pass (torchcam overwrites its hooked activation on every pass).
    The noise comes from the global RNG seeded with ``self.seed`` for the call, drawn for the whole batch at
    once: the maps are reproducible for a given batch and seed (not independent of the batch composition).
    """

    id = "smoothgradcampp"
    citation = "Omeiza et al., Smooth Grad-CAM++, arXiv 2019"
    needs_grad = True
    stochastic = True  # the noise is drawn for the whole batch of images at once
    draws_noise = True
    extractor_name = "SmoothGradCAMpp"
    paper_params = {"num_samples": 4, "std": 0.3}

    def check_params(self):
        check_noise_params(self)

    def extractor_kwargs(self, model):
        return {"num_samples": int(self.params["num_samples"]), "std": float(self.params["std"])}

    def cost(self, model):
        return Cost(forward=1.0, backward=float(self.params["num_samples"]))


class _ScoreFamily(TorchcamMethod):
    """Score-CAM and its variants: forward passes of ``x * U(norm(A_k))``, ``self.batch_size`` inputs per pass."""

    def extractor_kwargs(self, model):
        return {"batch_size": max(1, int(self.batch_size))}

    def samples(self) -> int:
        return 1

    def cost(self, model):
        # the hooked forward + torchcam's clean reference forward + C masked inputs per sample
        return Cost(forward=2.0 + layer_channels(model, model.last_conv) * self.samples())


@register_method
class ScoreCAM(_ScoreFamily):
    """Score-CAM (Wang et al. 2020), torchcam ``ScoreCAM`` on the last conv layer:
    ``ReLU(sum_k w_k A_k)``, ``w = softmax_k(Y_c(x * M_k) - Y_c(x))``, ``M_k = U(norm(A_k))`` with ``norm`` the
    per-channel min-max and ``U`` bilinear upsampling to the input size with ``align_corners=False``; ``Y_c`` is
    the logit (the original paper used the softmax probability). ``x * M_k`` is in normalised space (baseline 0).
    The B x C masked inputs of a batch go through the model ``batch_size`` at a time (torchcam ``batch_size``).
    """

    id = "scorecam"
    citation = "Wang et al., Score-CAM, CVPR workshops 2020"
    extractor_name = "ScoreCAM"


@register_method
class SSCAM(_ScoreFamily):
    """SS-CAM (Wang et al. 2020), torchcam ``SSCAM``: Score-CAM with ``w = softmax_k(mean_n Y_c(x * (M_k + d_n)) -
    Y_c(x))``, ``d_n ~ N(0, std^2)`` drawn at the input resolution, ``num_samples=35``, ``std=2.0`` (paper).

    torchcam upsamples the activation of the whole batch to the input resolution before adding noise (B x C x
    H x W floats, 8 GB for 32 images of a 1280-channel layer), so it is called one image at a time: memory
    stays at one image's C x H x W, and the C x num_samples masked inputs still fill every forward pass. The
    noise comes from the global RNG seeded with ``self.seed`` for each image, so a map depends only on its
    image, class and seed.
    """

    id = "sscam"
    citation = "Wang et al., SS-CAM: Smoothed Score-CAM, arXiv 2020"
    extractor_name = "SSCAM"
    per_image = True
    draws_noise = True
    # not ``stochastic``: torchcam draws each sample's noise at the shape of one image's upsampled activation,
    # whatever the inputs per pass, so the maps do not depend on batch_size (test_batch_equals_one_by_one) and the
    # harness may give SS-CAM the tuned pass size
    paper_params = {"num_samples": 35, "std": 2.0}
    quick_params = {"num_samples": 1}

    def check_params(self):
        check_noise_params(self)

    def extractor_kwargs(self, model):
        return {**super().extractor_kwargs(model), "num_samples": int(self.params["num_samples"]),
                "std": float(self.params["std"])}

    def samples(self):
        return int(self.params["num_samples"])


@register_method
class ISCAM(_ScoreFamily):
    """IS-CAM (Naidu et al. 2020), torchcam ``ISCAM``, ``num_samples=10`` (paper):
    ``w = softmax_k(mean_i Y_c(c_i * x * M_k) - Y_c(x))`` with torchcam's accumulated coefficients
    ``c_i = sum_{j=1..i} j / N`` (0.1, 0.3, 0.6, ..., 5.5 for N = 10; the IS-CAM authors use ``i / N``, up to 1).
    Called one image at a time: torchcam materialises all B x C upsampled masks at once (see SS-CAM).
    """

    id = "iscam"
    citation = "Naidu et al., IS-CAM: Integrated Score-CAM, arXiv 2020"
    extractor_name = "ISCAM"
    per_image = True
    paper_params = {"num_samples": 10}
    quick_params = {"num_samples": 2}

    def check_params(self):
        self.require("num_samples", self.params["num_samples"] >= 1, ">= 1")

    def extractor_kwargs(self, model):
        return {**super().extractor_kwargs(model), "num_samples": int(self.params["num_samples"])}

    def samples(self):
        return int(self.params["num_samples"])


@register_method
class LayerCAM(TorchcamMethod):
    """Layer-CAM (Jiang et al. 2021) on the five Poly-CAM layers (``model.polycam_layers``), one backward pass.

    Per layer (torchcam ``LayerCAM``): ``L_l = minmax(ReLU(sum_k ReLU(dY_c/dA_k) * A_k))``. Fusion as the
    reference ran it: the ``scaled_layers`` shallowest maps become ``tanh(gamma * L_l / max L_l)``, then every
    map is upsampled bilinearly (``align_corners=False``) to the largest layer resolution and fused by
    element-wise max. torchcam's own ``LayerCAM.fuse_cams`` differs: it scales *every* layer with
    ``tanh(2 L)``. (The paper's text says the scaling was applied to "the first two layers"; the reference
    code scales three: ``scaled_layers`` makes it a parameter.)
    """

    id = "layercam"
    citation = "Jiang et al., LayerCAM, IEEE TIP 2021"
    needs_grad = True
    extractor_name = "LayerCAM"
    paper_params = {"scaled_layers": 3, "gamma": 2.0}

    def check_params(self):
        self.require("scaled_layers", self.params["scaled_layers"] >= 0, ">= 0")
        self.require("gamma", self.params["gamma"] > 0, "> 0")

    def target_layers(self, model):
        return list(model.polycam_layers)

    def combine(self, cams):
        return fuse_layercam(cams, int(self.params["scaled_layers"]), float(self.params["gamma"]))


def fuse_layercam(cams: list[torch.Tensor], scaled_layers: int, gamma: float) -> torch.Tensor:
    """Layer-CAM fusion of per-layer maps [B,h_l,w_l] given shallow -> deep (see :class:`LayerCAM`)."""
    size = max((tuple(c.shape[-2:]) for c in cams), key=lambda s: s[0] * s[1])
    fused = None
    for i, cam in enumerate(cams):
        cam = cam.float()
        if i < scaled_layers:
            cam = torch.tanh(gamma * cam / cam.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12))
        if tuple(cam.shape[-2:]) != size:
            cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        fused = cam if fused is None else torch.maximum(fused, cam)
    return fused
