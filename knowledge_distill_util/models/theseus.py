"""BERT-of-Theseus: progressive module replacement (Xu et al., 2020), as the original run script did it.

The teacher's ``Lt`` layers are cut into ``Ls`` blocks of ``k = Lt // Ls`` consecutive layers
(the *predecessor* modules, frozen). Successor layer ``i`` (initialised, as the official code does, from
the teacher's layer ``i``) replaces block ``i`` with probability ``replace_prob`` at every training step,
one coin per block, shared by the whole batch; embeddings, pooler and classifier are shared and trained.
After this stage the successor alone (``replace_prob = 1``) is an ordinary
:class:`~knowledge_distill_util.models.BertForSequenceClassification` of ``Ls`` layers (:attr:`successor`),
which is then fine-tuned on the labels.
"""
import copy
from typing import Dict, Optional, Sequence, Union

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .bert import BertForSequenceClassification
from .init import init_student_from_teacher

__all__ = ["TheseusModel", "sample_replacement"]


def sample_replacement(rng: np.random.Generator, num_blocks: int, replace_prob: float) -> np.ndarray:
    """One Bernoulli(``replace_prob``) coin per block: ``[num_blocks]`` float32, 1 = use the successor.

    >>> sample_replacement(np.random.default_rng(0), 3, 1.0).tolist()
    [1.0, 1.0, 1.0]
    """
    return (rng.random(num_blocks) < replace_prob).astype(np.float32)


class TheseusModel(nn.Module):
    """Predecessor (teacher layers, frozen) + successor (``Ls`` layers) with random module replacement.

    ``forward(input_ids, input_mask, token_type_ids, coins=None)`` returns ``(logits, [], [])``:
    ``coins`` is ``[Ls]`` (1 = successor block): a numpy array selects the blocks in Python (eager),
    a tensor blends both outputs as ``c * successor + (1 - c) * predecessor`` (``nn.Graph`` needs
    data-independent code; the values are the same). Without ``coins`` (evaluation) every block is the
    successor's.
    """

    def __init__(self, teacher: BertForSequenceClassification, num_successor_layers: int,
                 replace_prob: float, seed: int = 0):
        super().__init__()
        teacher_layers = len(teacher.encoder.layer)
        if num_successor_layers < 1 or teacher_layers % num_successor_layers != 0:
            raise ValueError(
                f"student_num_hidden_layers={num_successor_layers} must divide the teacher's "
                f"{teacher_layers} layers for BERT-of-Theseus (each successor layer replaces one block "
                f"of teacher layers); choose a divisor of {teacher_layers}"
            )
        if not 0.0 <= replace_prob <= 1.0:
            raise ValueError(f"replace_prob must be in [0, 1], got {replace_prob!r}")
        config = dict(teacher.config, num_hidden_layers=num_successor_layers, is_student=False)
        self.successor = BertForSequenceClassification(**config)
        init_student_from_teacher(self.successor, teacher, list(range(num_successor_layers)))
        self.predecessor = copy.deepcopy(teacher.encoder.layer)
        for parameter in self.predecessor.parameters():
            parameter.requires_grad = False
        self.block = teacher_layers // num_successor_layers
        self.replace_prob = float(replace_prob)
        self.rng = np.random.default_rng(seed)

    def sample_coins(self) -> np.ndarray:
        """Draw this step's replacement coins from the model's own seeded generator."""
        return sample_replacement(self.rng, len(self.successor.encoder.layer), self.replace_prob)

    # the StepInputs interface of the trainer (see trainer.StepInputs)
    step_input_names = ("coins",)

    def step_inputs(self) -> Dict[str, np.ndarray]:
        """This training step's extra forward inputs: ``{"coins": [Ls]}``."""
        return {"coins": self.sample_coins()}

    def rng_state(self) -> Dict:
        """State of the coin generator (saved in checkpoints for an exact resume)."""
        return self.rng.bit_generator.state

    def set_rng_state(self, state: Dict) -> None:
        self.rng.bit_generator.state = state

    def _predecessor_block(self, index: int, hidden, bias):
        for layer in self.predecessor[index * self.block:(index + 1) * self.block]:
            hidden, _ = layer(hidden, bias)
        return hidden

    def forward(self, input_ids, input_mask, token_type_ids,
                coins: Optional[Union[np.ndarray, flow.Tensor, Sequence[float]]] = None):
        model = self.successor
        hidden = model.embed(input_ids, token_type_ids)
        bias = model.attention_bias(input_mask, hidden.dtype)
        for i, layer in enumerate(model.encoder.layer):
            if coins is None:
                hidden, _ = layer(hidden, bias)
            elif isinstance(coins, flow.Tensor):
                new, _ = layer(hidden, bias)
                old = self._predecessor_block(i, hidden, bias)
                hidden = coins[i] * new + (1.0 - coins[i]) * old
            elif float(coins[i]) > 0.5:
                hidden, _ = layer(hidden, bias)
            else:
                hidden = self._predecessor_block(i, hidden, bias)
        return model.classify(hidden), [], []
