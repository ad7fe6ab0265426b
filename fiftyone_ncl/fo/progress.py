"""Progress of a whole run, split into phases.

``progress`` arguments across the SDK accept True (tqdm bars), False
(silent), or a callable ``fn(fraction, label)``; an operator passes one that
calls ``ctx.set_progress``. A run reports embedding, training, scoring and
writing as consecutive slices of one 0..1 scale. ``True`` draws bars only
when someone watches (stderr is a terminal, or a Jupyter kernel runs):
logs, CI and piped output stay quiet (pass a callable to follow progress
there).
"""
import sys


def is_terminal():
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class PhasedProgress:
    """Maps per-phase progress into one overall fraction.

    Args:
        progress: True, False or a callable ``fn(fraction, label)``
        weights: ordered dict-like of phase name -> share of the total
    """

    def __init__(self, progress, weights):
        self.progress = progress
        total = float(sum(weights.values()))
        self._start = {}
        acc = 0.0
        for name, w in weights.items():
            self._start[name] = (acc / total, w / total)
            acc += w

    def phase(self, name):
        """The ``progress`` argument to hand to the code doing phase ``name``."""
        if not callable(self.progress):
            return bool(self.progress) and is_terminal()
        start, share = self._start[name]

        def report(fraction, label):
            self.progress(start + share * min(max(fraction, 0.0), 1.0), label)

        return report

    def done(self, name, label=None):
        """Marks phase ``name`` complete."""
        if callable(self.progress):
            start, share = self._start[name]
            self.progress(start + share, label or name)
