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


class Poison(torch.nn.Module):
    """Sets the first sample of every batch to NaN and the second to +Inf."""

    def forward(self, x):
        x = x.clone()
        x[0] = float("nan")
        if len(x) > 1:
            x[1] = float("inf")
        return x


class NaNs(Small):
    def __init__(self, **_):
        super().__init__()
        self.poison = Poison()

    def forward(self, x):
        return self.pool(self.poison(torch.relu(self.conv(x)))).flatten(1)


class TupleOut(Small):
    def __init__(self, **_):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 8, batch_first=True)
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x):
        h = super().forward(x)[:, None, :]
        out, _ = self.lstm(h)
        return out[:, 0]


class Slow(Small):
    """Sleeps in every forward pass and touches a marker file, so a test can kill it mid-extraction."""

    def forward(self, x):
        import os
        import time

        marker = os.environ.get("REPORTGEN_TEST_MARKER")
        if marker:
            open(marker, "a").close()
        time.sleep(0.3)
        return super().forward(x)
