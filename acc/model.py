"""The model under study: a linear autoencoder with a ReLU code and a sigmoid output."""

from torch import Tensor, nn


class LinearAutoencoder(nn.Module):
    def __init__(self, input_dim: int = 784, hidden_dim: int = 64):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(hidden_dim, input_dim), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        """[B,1,28,28] (or [B,784]) in, reconstruction of the same shape out."""
        return self.decoder(self.encoder(x.flatten(1))).view_as(x)
