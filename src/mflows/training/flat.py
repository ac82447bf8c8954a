"""One flat buffer for the values and one for the gradients of a group of parameters.

On the CPU, torch's optimisers, gradient clipping and step counters run one kernel per tensor
(the multi-tensor kernels loop over the tensors there). A phase of the paper's power M-flow has
60 parameter tensors, and this per-tensor work was about a tenth of a compiled training step.
:class:`FlatParameters` makes the parameters of a group views of one buffer and gathers their
gradients into one flat gradient after the backward pass, so the optimiser, the clipping and the
finiteness check see a single tensor. The maths is unchanged: the optimisers are element-wise,
and the gradient norm is the same sum of squares.

Every parameter starts at a multiple of :data:`ALIGN` elements (compiled kernels assume aligned
inputs and copy misaligned ones); the gaps are zero and stay zero. A parameter that got no
gradient in a step is updated as with a zero gradient (torch's optimisers would skip it): no
mflows model has such a parameter in a phase that trains it (tested).

Optimiser states are converted to and from torch's per-parameter layout, so checkpoints do not
depend on the flattening.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ALIGN", "FlatParameters", "flattenable"]

#: Elements between parameter starts are a multiple of this (64 bytes in float32).
ALIGN = 16


def flattenable(params: list[nn.Parameter]) -> bool:
    """Whether ``params`` can share one buffer: a non-empty group of one dtype and device."""
    return len({(p.dtype, p.device) for p in params}) == 1


class FlatParameters:
    """Parameters turned into views of one buffer, with one flat gradient.

    Args:
        params: the group, all of one dtype and device.

    Attributes:
        parameter: the flat leaf tensor to hand to the optimiser.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        if not flattenable(params):
            raise ValueError("FlatParameters needs a non-empty group of one dtype and device")
        self.params = list(params)
        self.slices: list[slice] = []
        start = 0
        for p in self.params:
            self.slices.append(slice(start, start + p.numel()))
            start += -(-p.numel() // ALIGN) * ALIGN
        first = self.params[0]
        buffer = torch.zeros(start, dtype=first.dtype, device=first.device)
        for p, s in zip(self.params, self.slices):
            buffer[s].copy_(p.detach().reshape(-1))
            p.data = buffer[s].view_as(p)
        self.parameter = nn.Parameter(buffer)
        # the backward pass accumulates into views of the flat gradient, in place
        self._grad = torch.zeros_like(buffer)
        self._grads = [self._grad[s].view_as(p) for p, s in zip(self.params, self.slices)]
        for p, g in zip(self.params, self._grads):
            p.grad = g
        self.parameter.grad = self._grad

    def zero_grad(self) -> None:
        """Zeroes the flat gradient (one kernel).

        The flat gradient is attached again: code that replaced ``parameter.grad`` (the
        all-reduce of data-parallel training) does not detach it from the parameters' views.
        """
        self._grad.zero_()
        self.parameter.grad = self._grad

    def gather_gradients(self) -> None:
        """Makes the flat gradient hold the parameters' gradients.

        The backward pass has written them there already, unless something replaced or dropped
        a parameter's gradient (``model.zero_grad()`` sets them to ``None``): those are copied
        in (zero where there is none) and the views attached again.
        """
        for p, g in zip(self.params, self._grads):
            if p.grad is not g:
                if p.grad is None:
                    g.zero_()
                else:
                    g.copy_(p.grad)
                p.grad = g
        self.parameter.grad = self._grad

    def release(self) -> None:
        """Gives every parameter its own storage again (the values it has now), no gradient."""
        for p in self.params:
            p.data = p.data.clone()
            p.grad = None
        self.parameter.grad = None
        self._grads = []
        self._grad = torch.zeros(0)

    # ------------------------------------------------------------------ optimiser states
    def state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``optimizer.state_dict()`` in torch's layout for the original parameters."""
        saved = optimizer.state_dict()
        flat_state = saved["state"].get(0, {})
        state = {}
        for i, (p, s) in enumerate(zip(self.params, self.slices)):
            state[i] = {k: self._split(v, s, p) for k, v in flat_state.items()}
        groups = [{**g, "params": list(range(len(self.params)))} for g in saved["param_groups"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """Loads a state in torch's layout for the original parameters (see :meth:`state_dict`).

        Raises:
            ValueError: the state is for a different number of parameters.
        """
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"optimiser state for {sum(len(g['params']) for g in groups)} parameters, "
                f"this group has {len(self.params)}"
            )
        states = [saved["state"].get(i, {}) for i in groups[0]["params"]]
        flat: dict[str, Any] = {}
        for key in states[0] if states and all(states) else ():
            values = [s[key] for s in states]
            if all(torch.is_tensor(v) and v.shape == p.shape for v, p in zip(values, self.params)):
                full = self.parameter.detach().new_zeros(self.parameter.shape)
                for v, s in zip(values, self.slices):
                    full[s] = v.reshape(-1)
                flat[key] = full
            else:  # per-tensor scalars (the step): one value for the group, a copy
                top = max(values, key=float)
                flat[key] = top.clone() if torch.is_tensor(top) else top
        optimizer.load_state_dict(
            {"state": {0: flat} if flat else {}, "param_groups": [{**groups[0], "params": [0]}]}
        )

    @staticmethod
    def _split(value: Any, s: slice, p: Tensor) -> Any:
        if torch.is_tensor(value) and value.dim() == 1 and value.numel() > 1:
            return value[s].view_as(p).clone()
        return value.clone() if torch.is_tensor(value) else value
