"""Seed ranges, handled lazily: `0-999999999` costs a few integers, not a billion."""

import bisect
import re

from .errors import UserError
from .samplers.noise import MAX_SEED


class SeedRanges:
    """Sorted, merged, inclusive seed ranges; indexable and batchable without listing the seeds."""

    def __init__(self, ranges):
        merged = []
        for lo, hi in sorted((int(lo), int(hi)) for lo, hi in ranges):
            if not 0 <= lo <= hi <= MAX_SEED:
                raise UserError(f"seed range {lo}-{hi} is invalid: seeds are integers in 0..{MAX_SEED}, end >= start")
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        if not merged:
            raise UserError("no seeds given")
        self.ranges = [tuple(r) for r in merged]
        self.starts = []  # index of each range's first seed
        n = 0
        for lo, hi in self.ranges:
            self.starts.append(n)
            n += hi - lo + 1
        self.count = n

    @classmethod
    def parse(cls, text):
        """'0-49999' or '0,5,10-19' (what --seeds and --classes take)."""
        ranges = []
        for part in str(text).split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise UserError(f"malformed seed range {text!r}: use e.g. 0-49999 or 0,5,10-19")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise UserError(f"malformed seed range {part.strip()!r}: the end is below the start")
            if hi > MAX_SEED:
                raise UserError(f"seed {hi} is out of range: seeds are integers in 0..{MAX_SEED} (2^63 - 1)")
            ranges.append((lo, hi))
        return cls(ranges)

    def __getitem__(self, i):
        if not 0 <= i < self.count:
            raise IndexError(i)
        r = bisect.bisect_right(self.starts, i) - 1
        return self.ranges[r][0] + i - self.starts[r]

    def __iter__(self):
        for lo, hi in self.ranges:
            yield from range(lo, hi + 1)

    def __repr__(self):
        return ",".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in self.ranges)

    def num_batches(self, batch_size):
        return -(-self.count // batch_size)

    def batch(self, j, batch_size):
        """Seeds of batch j: indices j*B .. (j+1)*B - 1."""
        return [self[i] for i in range(j * batch_size, min((j + 1) * batch_size, self.count))]

    def first(self, n):
        return [self[i] for i in range(min(n, self.count))]
