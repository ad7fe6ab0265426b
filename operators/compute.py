"""Compute correspondence: score every image-caption pair of a view.

Every form field is named after an argument of
:func:`fiftyone_ncl.compute_correspondence` (or an option of the chosen
method), and ``execute`` forwards them as they are.
"""
import fiftyone.core.fields as fof
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import caption_field_input, icons, new_run_key_input, sdk_kwargs, with_progress

_RECIPE_LABELS = {
    "open_clip": "open_clip model",
    "fields": "Precomputed fields",
    "pixels_minilm": "Pixels + MiniLM",
    "cnn_minilm": "CNN + MiniLM",
    "open_clip_finetune": "Fine-tune open_clip",
}
DEFAULT_RECIPE = "open_clip"
# parameter names of earlier releases -> today's (operators scripted with params)
_LEGACY_PARAMS = {"image_field": "image_embeddings", "text_field": "text_embeddings"}
_LEGACY_SOURCES = {"clip": "open_clip", "fields": "fields", "pixels": "pixels_minilm"}


class ComputeCorrespondence(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="compute_correspondence",
            label="Compute correspondence",
            description="Score how well each caption matches its image and flag mismatches",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_execution_options(self, ctx):
        # training belongs in a delegated run (no 600 s timeout, progress
        # persisted); a method that does not train over stored fields is quick
        params = form_params(ctx)
        method = params.get("method", ncl.DEFAULT_METHOD)
        quick = not ncl.method_capabilities(method)["trains"] and params.get("recipe") == "fields"
        return foo.ExecutionOptions(
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=not quick,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        ready = compute_inputs(ctx, inputs)
        if not ready:
            inputs.view(
                "not_ready",
                types.Notice(label="Execute is disabled until the fields marked above are valid"),
            )
        return types.Property(inputs, view=types.View(label="Compute correspondence"))

    def execute(self, ctx):
        kwargs = compute_kwargs(form_params(ctx))
        target = ctx.target_view()

        def run(progress):
            return ncl.compute_correspondence(target, progress=progress, **kwargs).summary()

        summary = yield from with_progress(ctx, run)
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
            yield ctx.ops.notify(
                "%s: %d of %d pairs flagged" % (summary["run_key"], summary["flagged"], summary["pairs"]),
                variant="success",
            )

    def __call__(self, sample_collection, delegate=False, **params):
        """Runs the operator from Python (``delegate=True`` queues it for a
        delegated worker)."""
        ctx = {"dataset": sample_collection._dataset, "view": sample_collection.view(), "params": params}
        return foo.execute_operator(self.uri, ctx, request_delegation=delegate)


def form_params(ctx):
    """The form's values, with earlier releases' parameter names translated."""
    params = dict(ctx.params)
    for old, new in _LEGACY_PARAMS.items():
        if old in params:
            params.setdefault(new, params.pop(old))
    if "source" in params:
        params.setdefault("recipe", _LEGACY_SOURCES.get(params.pop("source")))
    return params


def compute_kwargs(params):
    """The form's values as keyword arguments of
    :func:`fiftyone_ncl.compute_correspondence`: SDK arguments as they are,
    the chosen method's options decoded from their form widgets."""
    method = params.get("method", ncl.DEFAULT_METHOD)
    options = ncl.method_capabilities(method)["options"]
    kwargs = sdk_kwargs(ncl.compute_correspondence, params, extra=options)
    for name in set(kwargs) & set(options):
        kwargs[name] = _parse_option(kwargs[name], options[name])
    if kwargs.get("model"):  # a trained model keeps its own options
        kwargs = {k: v for k, v in kwargs.items() if k not in options or k == "device"}
    return kwargs


def compute_inputs(ctx, inputs):
    """Builds the form; returns whether everything required is valid."""
    params = form_params(ctx)
    inputs.view_target(ctx, action_description="Score")
    caption_field = caption_field_input(ctx, inputs)
    ready = caption_field is not None

    methods = types.DropdownView()
    for name in ["auto"] + ncl.list_methods():
        methods.add_choice(name, label=name, description=ncl.method_capabilities(name)["summary"])
    inputs.enum(
        "method",
        methods.values(),
        default=ncl.DEFAULT_METHOD,
        required=False,
        label="Method",
        description="auto tries cca, gmm and crcl on a copy with known swaps; cosine/gmm/cca are the baselines; "
        "crcl and disncl train on this data",
        view=methods,
    )
    method = params.get("method", ncl.DEFAULT_METHOD)
    trains = ncl.method_capabilities(method)["trains"]

    recipes = types.RadioGroup(orientation="vertical")
    for name, description in ncl.list_recipes().items():
        if name == "open_clip_finetune" and not trains:
            continue
        recipes.add_choice(name, label=_RECIPE_LABELS.get(name, name), description=description.split(": ", 1)[-1])
    inputs.enum("recipe", recipes.values(), default=DEFAULT_RECIPE, required=False, label="Embeddings", view=recipes)
    recipe = params.get("recipe", DEFAULT_RECIPE)
    if recipe in ("open_clip", "open_clip_finetune"):
        inputs.str(
            "encoder",
            default="open_clip:ViT-B-32:laion2b_s34b_b79k",
            required=False,
            label="open_clip model",
            description="open_clip:<model>:<pretrained tag, local checkpoint file, or random>",
        )
    elif recipe in ("pixels_minilm", "cnn_minilm"):
        inputs.str("image_encoder", default="pixels:28", required=False, label="Image pixels",
                   description="pixels:<size>[:rgb] (grey by default)")
    if recipe == "fields":
        ready &= _vector_field_input(ctx, inputs, "image_embeddings", "Image embeddings field")
        ready &= _vector_field_input(ctx, inputs, "text_embeddings", "Caption embeddings field")
    elif recipe in ("open_clip", "pixels_minilm"):
        inputs.str("image_embeddings", label="Cache image embeddings in field", description="Optional; reused by later runs")
        inputs.str("text_embeddings", label="Cache caption embeddings in field", description="Optional; reused by later runs")

    inputs.str(
        "model",
        label="Trained model (optional)",
        description="A checkpoint saved by an earlier run: score with it instead of training",
    )
    if not params.get("model"):
        _method_options(inputs, method)
        if ncl.method_capabilities(method)["uses_labels"]:
            _labels_input(ctx, inputs)
    inputs.bool(
        "store_embeddings",
        default=False,
        label="Store embeddings",
        description="Keep the method's image/caption embeddings as fields, for UMAP maps (DisNCL always stores MII/MEI)",
        view=types.CheckboxView(),
    )
    inputs.float(
        "threshold",
        default=0.5,
        min=0.0,
        max=1.0,
        label="Threshold",
        description="Pairs whose confidence is below this are flagged noisy",
    )
    key = new_run_key_input(
        ctx, inputs, method=method, caption_field=caption_field,
        store_embeddings=bool(params.get("store_embeddings", False)),
    )
    return ready and key is not None


def _vector_field_input(ctx, inputs, name, label):
    schema = ctx.dataset.get_field_schema() if ctx.dataset is not None else {}
    fields = [k for k, f in schema.items() if isinstance(f, (fof.VectorField, fof.ArrayField))]
    if not fields:
        inputs.view(
            "no_" + name,
            types.Warning(label="This dataset has no vector fields", description="Pick another embeddings source"),
        )
        return False
    choices = types.AutocompleteView()
    for f in fields:
        choices.add_choice(f, label=f)
    inputs.enum(name, choices.values(), required=True, label=label, view=choices)
    return bool(form_params(ctx).get(name))


def _labels_input(ctx, inputs):
    """An optional boolean field of pairs a person judged (True = the caption
    matches): the method fits its weights on them."""
    schema = ctx.dataset.get_field_schema() if ctx.dataset is not None else {}
    fields = [k for k, f in schema.items() if isinstance(f, fof.BooleanField)
              or isinstance(f, fof.ListField) and isinstance(f.field, fof.BooleanField)]
    if not fields:
        return
    choices = types.AutocompleteView()
    for f in fields:
        choices.add_choice(f, label=f)
    inputs.enum("labels", choices.values(), required=False, label="Judged pairs (optional)",
                description="A boolean field: True where you checked the caption matches, False where it "
                "does not, empty elsewhere; the weights are fitted on them", view=choices)


def _method_options(inputs, method):
    """Inputs for the method's main options, named as the options are."""
    capabilities = ncl.method_capabilities(method)
    for name in capabilities["form_options"]:
        default = capabilities["options"][name]
        label = name.replace("_", " ").capitalize()
        if name == "device":
            choices = types.DropdownView()
            for d in ("auto", "cpu", "cuda"):
                choices.add_choice(d, label=d)
            inputs.enum(name, choices.values(), default=default or "auto", label="Device",
                        description="auto = CUDA when available, else CPU", view=choices)
        elif default is None or isinstance(default, bool):
            choices = types.RadioGroup(orientation="horizontal")
            for v in ("auto", "yes", "no"):
                choices.add_choice(v, label=v)
            inputs.enum(name, choices.values(), default="auto" if default is None else ("yes" if default else "no"),
                        label=label, view=choices)
        elif isinstance(default, int):
            inputs.int(name, default=default, label=label)
        elif isinstance(default, float):
            inputs.float(name, default=default, label=label)
        elif isinstance(default, (tuple, list)):
            inputs.str(name, default=",".join(map(str, default)), label=label, description="Comma-separated")
        else:
            inputs.str(name, default=str(default), label=label)


def _parse_option(value, default):
    """A form widget's value as the option's type (yes/no/auto radios,
    comma-separated lists)."""
    if value == "auto" and (default is None or isinstance(default, bool)):
        return None
    if isinstance(value, str) and (default is None or isinstance(default, bool)) and value in ("yes", "no"):
        return value == "yes"
    if isinstance(default, (tuple, list)) and isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        return tuple(int(v) if v.lstrip("-").isdigit() else v for v in items)
    return value
