"""What BOSHNAS's surrogates see of each library model, and which of those columns the linear prior mean reads.

One home for the inputs, because three parties must agree on them: the surrogates are fitted on
them, GOBI moves through their space, and a resumed search refuses surrogates fitted on another width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embeddings.library import Library
from flexibert.search.strategies.base import SearchContext
from flexibert.search.strategies.encoding import ChoiceEncoding


@dataclass(frozen=True)
class SurrogateInputs:
    """Every model of ``library``: its row of ``matrix`` (library order) and, as a column range, what the prior reads."""

    library: Library
    matrix: np.ndarray
    prior_columns: tuple[int, int] | None

    @classmethod
    def of(cls, context: SearchContext, choices: bool = True, prior: bool = True) -> SurrogateInputs:
        """The embeddings, the model dicts' choices one-hot (``choices``) and, with several objectives, the cheap ones
        (log, standardised); the prior (``prior``, only with the choices) reads every column but the embedding's.

        The 16-d embedding places models by edit distance but blurs which choices they make, and a
        score depends on the choices: with them as inputs the surrogate ranked unseen NAS-Bench-BERT
        models with Spearman 0.86 after 20 scores, against 0.41 on the embedding alone. A model's size
        says much about its score too (larger models tend to score higher); with the sizes known for
        every model, the surrogates of a front search need not learn them from a few scores. The
        embedding's 16 dense columns would take the prior's weights from the choices (ranked with them,
        unseen models: Spearman 0.75 against 0.86 after 20 scores), so the prior leaves them out.
        """
        parts = [context.features]
        if choices:
            parts.append(ChoiceEncoding.of(context.library, tied=False).one_hot())
        cheap = [context.objectives.column(context.library, o) for o in context.objectives.objectives if o.cheap]
        if context.objectives.multi and cheap:
            logs = np.log(np.maximum(np.stack(cheap, axis=1), 1e-12))
            parts.append(((logs - logs.mean(axis=0)) / np.maximum(logs.std(axis=0), 1e-12)).astype(np.float32))
        matrix = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        start, width = context.features.shape[1], matrix.shape[1]
        return cls(context.library, matrix, (start, width) if prior and choices and width > start else None)

    def check_width(self, fitted_width: int) -> None:
        """Refuse surrogates fitted on another number of inputs per model (a run started by another FlexiBERT)."""
        if fitted_width != self.matrix.shape[1]:
            raise RuntimeError(f"this run's surrogates were fitted on {fitted_width} inputs per model, and BOSHNAS now "
                               f"gives {self.matrix.shape[1]}: the run was started by a FlexiBERT whose inputs differ "
                               "(earlier front searches had no model-dict choices among them). Start the search in a new "
                               "--run_dir, or resume it with the version that started it.")
