"""Small real models with specific behaviour, loaded through `factory:` in the CLI tests."""
import torch


class Small(torch.nn.Module):
    def __init__(self, **_):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.calls = 0

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)


class Interrupting(Small):
    """Raises KeyboardInterrupt on its second batch, like a user pressing Ctrl-C."""

    def forward(self, x):
        self.calls += 1
        if self.calls >= 2:
            raise KeyboardInterrupt
        return super().forward(x)


class Broken(Small):
    def forward(self, x):
        raise RuntimeError("shape mismatch in my custom head")


class NaNs(Small):
    def forward(self, x):
        out = super().forward(x)
        out[0] = float("nan")
        return out
