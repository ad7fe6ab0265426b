"""Form pieces and execution helpers shared by the operators.

Operators stay thin: they build a form, read ``ctx.params`` and call the SDK
(:mod:`fiftyone_ncl`). Everything they can do, Python users can do without
the App.
"""
import inspect
import queue
import threading
import time

import fiftyone.operators.types as types

import fiftyone_ncl as ncl

LIGHT_ICON = "/operators/assets/icon-light.svg"
DARK_ICON = "/operators/assets/icon-dark.svg"

_PROGRESS_INTERVAL = 0.5  # seconds between progress messages


def icons():
    """The icon keyword arguments of every operator config."""
    return {"icon": LIGHT_ICON, "light_icon": LIGHT_ICON, "dark_icon": DARK_ICON}


def run_key_input(ctx, inputs, name="run_key", label="Run", description=None):
    """A dropdown of the dataset's correspondence runs; returns the chosen key
    or None (with a notice when there are no runs)."""
    runs = ncl.list_runs(ctx.dataset) if ctx.dataset is not None else []
    incomplete = ncl.list_incomplete_runs(ctx.dataset) if ctx.dataset is not None else {}
    runs = runs + [k for k in incomplete if k not in runs]
    if not runs:
        inputs.view(
            "no_runs",
            types.Warning(
                label="No correspondence runs",
                description="Run 'Compute correspondence' on this dataset first",
            ),
        )
        prop = inputs.str(name, required=True, view=types.HiddenView())
        prop.invalid = True
        prop.error_message = "This dataset has no correspondence runs"
        return None
    choices = types.DropdownView()
    for key in runs:
        choices.add_choice(key, label=key if key not in incomplete else "%s (incomplete: needs repair)" % key)
    default = ctx.params.get(name) if ctx.params.get(name) in runs else runs[-1]
    chosen = ctx.params.get(name, default)
    if chosen in incomplete:
        inputs.view("incomplete", types.Warning(label="Run '%s' is incomplete" % chosen,
                                                description=incomplete[chosen]))
    inputs.enum(
        name,
        choices.values(),
        default=default,
        required=False,
        label=label,
        description=description or "The correspondence run to use",
        view=choices,
    )
    return ctx.params.get(name, default)


def caption_field_input(ctx, inputs, name="caption_field"):
    """An autocomplete of the dataset's text fields; marks the form invalid
    and explains why when there is none."""
    fields = ncl.caption_fields(ctx.dataset) if ctx.dataset is not None else []
    if not fields:
        inputs.view(
            "no_caption_field",
            types.Warning(
                label="This dataset has no string caption field",
                description=(
                    "Add captions as a StringField (one per sample) or a list of "
                    "strings (several per image) before scoring"
                ),
            ),
        )
        prop = inputs.str(name, required=True, view=types.HiddenView())
        prop.invalid = True
        prop.error_message = "This dataset has no string caption field"
        return None
    choices = types.AutocompleteView()
    for f in fields:
        choices.add_choice(f, label=f)
    default = "caption" if "caption" in fields else fields[0]
    inputs.enum(
        name,
        choices.values(),
        default=default,
        required=False,
        label="Caption field",
        description="A string field, or a list of strings (several captions per image)",
        view=choices,
    )
    return ctx.params.get(name, default)


def new_run_key_input(ctx, inputs, name="run_key", default="ncl", allow_overwrite=True, **run):
    """A text input for a new run key, invalid (with the SDK's own message)
    when a run cannot be written under it; ``run`` (method, caption_field...)
    lets the check include the fields the run would write."""
    prop = inputs.str(
        name,
        default=default,
        required=False,
        label="Run key",
        description="Key of the run; its fields are named <key>_confidence, <key>_noisy, ...",
    )
    key = ctx.params.get(name, default)
    overwrite = False
    if allow_overwrite:
        inputs.bool(
            "overwrite",
            default=False,
            label="Overwrite",
            description="Replace an existing run with this key",
            view=types.CheckboxView(),
        )
        overwrite = bool(ctx.params.get("overwrite", False))
    problem = "no dataset" if ctx.dataset is None else ncl.validate_run_key(ctx.dataset, key, overwrite, **run)
    if problem:
        prop.invalid = True
        prop.error_message = problem
        return None
    return key


def sdk_kwargs(fn, params, extra=()):
    """The form's values that are arguments of the SDK function ``fn`` (form
    fields are named after them), plus the names in ``extra``; empty text
    boxes are left out so the SDK's defaults apply."""
    names = set(inspect.signature(fn).parameters) | set(extra)
    return {k: v for k, v in params.items() if k in names and v is not None and v != ""}


def with_progress(ctx, fn):
    """Runs ``fn(progress)`` and reports its progress in both execution modes.

    Delegated: ``ctx.set_progress`` writes to the operation's run document.
    Immediate: the work runs in a thread while this generator yields
    ``set_progress`` messages to the App. Use as
    ``result = yield from with_progress(ctx, fn)``.
    """
    if ctx.delegated:
        last = [0.0]

        def report(fraction, label):
            now = time.monotonic()
            if now - last[0] >= _PROGRESS_INTERVAL or fraction >= 1.0:
                last[0] = now
                ctx.set_progress(progress=fraction, label=label)

        return fn(report)

    messages = queue.Queue()
    outcome = {}

    def work():
        try:
            outcome["result"] = fn(lambda fraction, label: messages.put((fraction, label)))
        except BaseException as e:  # pylint: disable=broad-except
            outcome["error"] = e
        finally:
            messages.put(None)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    finished = False
    while not finished:
        item = messages.get()  # block until the work reports or ends
        if item is None:
            break
        while True:  # coalesce whatever else is already queued
            try:
                following = messages.get_nowait()
            except queue.Empty:
                break
            if following is None:
                finished = True
                break
            item = following
        yield ctx.ops.set_progress(progress=item[0], label=item[1])
        if not finished:
            time.sleep(_PROGRESS_INTERVAL)  # at most ~2 messages a second
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
