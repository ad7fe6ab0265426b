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
        bar (None): for code whose phases draw no bars of their own, a
            label: :meth:`phase` then always returns a callable, and with
            ``progress=True`` on a terminal one overall tqdm bar of that label
            follows every phase. Without it a phase gets ``True`` / ``False``
            when ``progress`` is not callable, and draws its own bars
    """

    def __init__(self, progress, weights, bar=None):
        self.progress = progress
        self._own_bars = not bar
        self._bar = None
        if bar and not callable(progress) and progress and is_terminal():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=1000, desc=bar, leave=False)
        total = float(sum(weights.values()))
        self._start = {}
        acc = 0.0
        for name, w in weights.items():
            self._start[name] = (acc / total, w / total)
            acc += w

    def phase(self, name):
        """The ``progress`` argument to hand to the code doing phase ``name``."""
        if not callable(self.progress) and self._own_bars:
            return bool(self.progress) and is_terminal()
        start, share = self._start[name]

        def report(fraction, label):
            self._report(start + share * min(max(fraction, 0.0), 1.0), label)

        return report

    def done(self, name, label=None):
        """Marks phase ``name`` complete."""
        if callable(self.progress) or self._bar is not None:
            start, share = self._start[name]
            self._report(start + share, label or name)

    def close(self):
        """Closes the overall bar, if one is drawn."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _report(self, value, label):
        if self._bar is not None:
            self._bar.n = int(1000 * value)
            self._bar.set_postfix_str(label, refresh=True)
        elif callable(self.progress):
            self.progress(value, label)
