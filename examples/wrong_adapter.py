"""A deliberately wrong adapter: examples/loop_adapter.py with two classic bugs planted.

* the Jacobian is assembled transposed (rows stacked along the last axis, then reshaped to
  the contract's ``(*out, *in)``): right only where the input or the output has one element;
* the Hessian drops its mixed blocks ``H[i][j]``, ``i != j`` (zeros instead).

``pytest --impl examples.wrong_adapter:ADAPTER tests/test_jacobian.py tests/test_hessian.py``
fails both, each with a shrunk, readable counterexample (the generated function's formula,
its inputs and argnums); tests/test_examples_adapters.py runs exactly that.
"""

from __future__ import annotations

import torch

from examples.loop_adapter import LoopAdapter


class WrongAdapter(LoopAdapter):
    name = "wrong-example"

    def assemble(
        self, rows: list[torch.Tensor], out: torch.Tensor, like: torch.Tensor
    ) -> torch.Tensor:
        if not rows:
            return super().assemble(rows, out, like)
        return torch.stack(rows, dim=-1).reshape((*out.shape, *like.shape))  # BUG: transposed

    def mixed(self, blocks: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        return [
            [
                b if i == j else torch.zeros_like(b) for j, b in enumerate(row)
            ]  # BUG: no mixed blocks
            for i, row in enumerate(blocks)
        ]


ADAPTER = WrongAdapter()
