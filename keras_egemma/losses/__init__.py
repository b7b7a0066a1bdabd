"""EmbeddingGemma's training losses (paper section 2.2, eq. (2)-(5)).

- `nce` / `NCELoss`: contrastive loss with in-batch and weighted hard
  negatives, eq. (2), and the duplicate mask of eq. (3).
- `spread_out` / `SpreadOutLoss`: the spread-out regulariser, eq. (4).
- `embedding_distillation` / `EmbeddingDistillationLoss`: embedding
  matching with a teacher, eq. (5).
- `MatryoshkaLoss`: a loss summed over nested embedding sizes (MRL).

The loss classes take dicts: `y_pred = {"query": (B, d), "positive": (B, d),
"negatives": (B, k, d) optional}`; `y_true` is None or a dict of ids
(`NCELoss`) or of teacher embeddings (`EmbeddingDistillationLoss`). Each
returns a scalar. A single loss given to `model.compile(loss=...)` is applied
by Keras to each output of a dict separately, so call these from an
overridden `Model.compute_loss` instead:

```python
def compute_loss(self, x, y, y_pred, sample_weight=None, training=True):
    return self.contrastive(y, y_pred) + self.spread(y, y_pred)
```
"""

from keras_egemma.losses.base import EmbeddingLoss
from keras_egemma.losses.distillation import DistillationProjection
from keras_egemma.losses.distillation import EmbeddingDistillationLoss
from keras_egemma.losses.distillation import embedding_distillation
from keras_egemma.losses.matryoshka import MatryoshkaLoss
from keras_egemma.losses.nce import NCELoss
from keras_egemma.losses.nce import duplicate_mask_from_ids
from keras_egemma.losses.nce import nce
from keras_egemma.losses.nce import text_ids
from keras_egemma.losses.spread_out import SpreadOutLoss
from keras_egemma.losses.spread_out import spread_out
