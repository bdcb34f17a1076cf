"""In-memory datasets: whole datasets live as tensors and batches are gathered
by index tensors (no per-item Python in the training loop)."""
import torch


def to_model_input(t):
    """uint8 images -> float in [0, 1]; captions (int64) and features (float) as they are."""
    return t.float().div_(255) if t.dtype == torch.uint8 else t


class TensorData:
    """A (multimodal) dataset of N items held as tensors.

    sources: one tensor per modality (e.g. uint8 images (n_m, C, H, W)).
    index:   one LongTensor (N,) per modality mapping item i -> row of that
             source (this is how pairs are stored); None means row i is item i.
    labels:  dict name -> LongTensor (N,), e.g. {'digit': ...}.
    source:  a human-readable description of where the data came from.
    display: None, or an object that says how figures show items that are
             not images (CUB captions and features: src/data/cub.py Display).
    """
    display = None

    def __init__(self, sources, labels, index=None, source='', names=None):
        self.sources = list(sources)
        n = len(index[0]) if index is not None else len(self.sources[0])
        self.index = index
        self.labels = {k: torch.as_tensor(v, dtype=torch.long) for k, v in labels.items()}
        self.source = source
        self.names = names or [f'm{i}' for i in range(len(self.sources))]
        self._n = n
        for k, v in self.labels.items():
            if len(v) != n:
                raise ValueError(f"label {k!r} has {len(v)} entries for {n} items")

    def __len__(self):
        return self._n

    @property
    def multimodal(self):
        return len(self.sources) > 1

    def gather(self, idx):
        """Model input for items idx: a tensor, or a list of tensors (one per modality)."""
        if self.index is None:
            xs = [to_model_input(s[idx]) for s in self.sources]
        else:
            xs = [to_model_input(s[ix[idx]]) for s, ix in zip(self.sources, self.index, strict=True)]
        return xs if self.multimodal else xs[0]

    def take(self, idx):
        """The items idx (a LongTensor) as a new TensorData sharing the sources: --max-test-items."""
        index = [idx] * len(self.sources) if self.index is None else [ix[idx] for ix in self.index]
        out = TensorData(self.sources, {k: v[idx] for k, v in self.labels.items()}, index,
                         f'{self.source}; {len(idx):,} of its {len(self):,} items', self.names)
        out.display = self.display
        return out

    def to(self, device):
        self.sources = [s.to(device) for s in self.sources]
        if self.index is not None:
            self.index = [ix.to(device) for ix in self.index]
        self.labels = {k: v.to(device) for k, v in self.labels.items()}
        return self


class BatchLoader:
    """Iterates (x, labels) batches of a TensorData; reshuffles every epoch.

    The shuffle uses its own torch.Generator (seeded), so the order of pairs
    does not depend on how much randomness the model consumed; its state is
    what a checkpoint saves (get_state/set_state) to replay an epoch's order.

    Data-parallel training (world_size > 1): every rank draws the same epoch
    order and keeps its own contiguous share of each global batch
    (shard(i)), so the N shares of batch i together are exactly the batch a
    single process would train on.
    """

    def __init__(self, data, batch_size, shuffle=False, seed=0, drop_last=False, rank=0, world_size=1):
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size

    def __len__(self):
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def get_state(self):
        return self.generator.get_state()

    def set_state(self, state):
        self.generator.set_state(state)

    def shard(self, i):
        """(offset, global size): this rank's rows of global batch i start at offset."""
        size = min(self.batch_size, len(self.data) - i * self.batch_size)
        q, r = divmod(size, self.world_size)  # as torch.tensor_split: the first r shares get one more
        return self.rank * q + min(self.rank, r), size

    def __iter__(self):
        return self.iter_from(0)

    def iter_from(self, start):
        """A new epoch (draws its order) from batch `start` on: resuming skips the
        batches already trained without gathering them."""
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        device = self.data.sources[0].device
        order = order.to(device)
        for i in range(start, len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.world_size > 1:
                idx = idx.tensor_split(self.world_size)[self.rank]
            yield self.data.gather(idx), {k: v[idx] for k, v in self.data.labels.items()}


def spread_subset(N, n, device=None):
    """n evenly spaced indices out of N (all when n >= N or n == 0): a subset that
    spans every class of the (class-ordered) paired data: the figures' test items, quick checks."""
    if n == 0 or n >= N:
        return torch.arange(N, device=device)
    return torch.linspace(0, N - 1, n, device=device).round().long()
