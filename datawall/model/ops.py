"""Hand-written backward passes for the two elementwise hot spots of a CPU training step.

On CPU, autograd through RMSNorm's composite ops costs ~16 full passes over the activations and SwiGLU's
chunk adds a concatenation; these versions need about half. On CUDA the fused ATen kernels are used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1])
        rstd = ms.add_(eps).rsqrt_()
        xhat = x * rstd
        ctx.save_for_backward(xhat, weight, rstd)
        return xhat * weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        xhat, weight, rstd = ctx.saved_tensors
        gw = grad * weight
        dweight = (grad * xhat).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
        # d/dx of x * rstd(x) applied to gw: rstd * (gw - xhat * mean(gw * xhat))
        dot = torch.linalg.vecdot(gw, xhat, dim=-1).unsqueeze(-1)
        dx = torch.addcmul(gw, xhat, dot, value=-1.0 / xhat.shape[-1]).mul_(rstd)
        return dx, dweight, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) * weight over the last dimension."""
    if x.device.type == "cpu" and x.dtype == torch.float32:
        return _RMSNorm.apply(x, weight, eps)
    return F.rms_norm(x, weight.shape, weight, eps)


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        gate, up = h.chunk(2, dim=-1)
        act = F.silu(gate)
        ctx.save_for_backward(gate, up, act)
        return act * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        gate, up, act = ctx.saved_tensors
        dh = torch.empty(*grad.shape[:-1], 2 * grad.shape[-1], dtype=grad.dtype, device=grad.device)
        dgate, dup = dh.chunk(2, dim=-1)
        # both halves are written straight into one buffer, so no concatenation follows
        torch.mul(grad, act, out=dup)
        torch.mul(grad, up, out=dgate)
        torch.ops.aten.silu_backward.grad_input(dgate, gate, grad_input=dgate)
        return dh


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for h = [gate | up] along the last dimension."""
    if h.device.type == "cpu" and h.dtype == torch.float32 and torch.is_grad_enabled():
        return _SwiGLU.apply(h)
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up
