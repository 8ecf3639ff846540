"""Small torch modules for the suite (importable by name, as torch.save of a whole module needs)."""

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features):
        return torch.relu(self.linear(features))
