"""The tiny networks of the by-hand objective tests (tests/test_objectives.py, tests/test_joint_posteriors.py):
one linear layer each way, data of X dimensions, latents of D."""
import torch
import torch.nn as nn


class Enc(nn.Module):
    """x (..., X) -> (loc, scale = softplus + 0.5), each (..., D)."""

    def __init__(self, X, D):
        super().__init__()
        self.D = D
        self.lin = nn.Linear(X, 2 * D)

    def forward(self, x):
        h = self.lin(x)
        return h[..., :self.D], nn.functional.softplus(h[..., self.D:]) + 0.5


class Dec(nn.Module):
    """z (..., D) -> (mean = sigmoid of a linear map (..., X), scale 0.75)."""

    def __init__(self, X, D):
        super().__init__()
        self.lin = nn.Linear(D, X)

    def forward(self, z):
        return torch.sigmoid(self.lin(z)), torch.tensor(0.75)
