"""Compute correspondence: score every image-caption pair of a view."""
import dataclasses

import fiftyone.core.fields as fof
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl
from fiftyone_ncl.core.methods import get_method_class

from ._utils import caption_field_input, icons, new_run_key_input, with_progress

_SOURCES = {
    "clip": ("open_clip model", "Embed images and captions with an open_clip model (one joint space)"),
    "fields": ("Precomputed fields", "Image and caption embeddings already stored as vector fields"),
    "pixels": (
        "Pixels + MiniLM",
        "Raw pixels of small images and all-MiniLM-L6-v2 captions, aligned by trained heads",
    ),
}


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
        # persisted); the cosine baseline over given embeddings is quick
        method = ctx.params.get("method", ncl.correspondence.DEFAULT_METHOD)
        quick = method in ("cosine", "gmm") and ctx.params.get("source") == "fields"
        return foo.ExecutionOptions(
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=not quick,
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        ready = _compute_inputs(ctx, inputs)
        if not ready:
            inputs.view(
                "not_ready",
                types.Notice(label="Execute is disabled until the fields marked above are valid"),
            )
        return types.Property(inputs, view=types.View(label="Compute correspondence"))

    def execute(self, ctx):
        kwargs = _sdk_kwargs(ctx)
        target = ctx.target_view()

        def run(progress):
            results = ncl.compute_correspondence(target, progress=progress, **kwargs)
            return results.summary()

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


def _compute_inputs(ctx, inputs):
    """Builds the form; returns whether everything required is valid."""
    inputs.view_target(ctx, action_description="Score")
    ready = True
    if caption_field_input(ctx, inputs) is None:
        ready = False

    methods = types.DropdownView()
    for name in ncl.list_methods():
        doc = (get_method_class(name).__doc__ or "").strip().splitlines()[0]
        methods.add_choice(name, label=name, description=doc)
    inputs.enum(
        "method",
        methods.values(),
        default=ncl.correspondence.DEFAULT_METHOD,
        required=False,
        label="Method",
        description="cosine/gmm are the baselines; crcl and disncl train on this data",
        view=methods,
    )
    method = ctx.params.get("method", ncl.correspondence.DEFAULT_METHOD)

    sources = types.RadioGroup(orientation="vertical")
    for key, (label, desc) in _SOURCES.items():
        sources.add_choice(key, label=label, description=desc)
    inputs.enum("source", sources.values(), default="clip", required=False, label="Embeddings", view=sources)
    source = ctx.params.get("source", "clip")
    if source == "clip":
        inputs.str("clip_model", default="ViT-B-32", required=False, label="open_clip model")
        inputs.str(
            "clip_pretrained",
            default="laion2b_s34b_b79k",
            required=False,
            label="Pretrained weights",
            description="A pretrained tag (downloaded once), a local checkpoint path, or 'random'",
        )
        if get_method_class(method).trains:
            inputs.bool(
                "fine_tune",
                default=False,
                label="Fine-tune the open_clip model end to end",
                description="Train the whole model, not only heads over its embeddings (a GPU is recommended)",
                view=types.CheckboxView(),
            )
        if not ctx.params.get("fine_tune"):
            inputs.str("image_cache_field", label="Cache image embeddings in field", description="Optional; reused by later runs")
            inputs.str("text_cache_field", label="Cache caption embeddings in field", description="Optional; reused by later runs")
    elif source == "fields":
        ready &= _vector_field_input(ctx, inputs, "image_field", "Image embeddings field")
        ready &= _vector_field_input(ctx, inputs, "text_field", "Caption embeddings field")
    else:
        inputs.int("image_size", default=28, min=8, label="Image size", description="Images are resized to this square size")

    inputs.str(
        "model",
        label="Trained model (optional)",
        description="A checkpoint saved by an earlier run: score with it instead of training",
    )
    if not ctx.params.get("model"):
        _method_options(inputs, method)
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
    key = new_run_key_input(ctx, inputs)
    if not key or (ctx.dataset is not None and key in ctx.dataset.list_brain_runs() and not ctx.params.get("overwrite")):
        ready = False
    return ready


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
    return bool(ctx.params.get(name))


def _method_options(inputs, method):
    """Inputs for the method's main knobs, from its config dataclass."""
    cls = get_method_class(method)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
    for name in getattr(cls, "form_options", ()):
        default = defaults.get(name)
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
    if value in ("auto",) and (default is None or isinstance(default, bool)):
        return None
    if isinstance(value, str) and (default is None or isinstance(default, bool)) and value in ("yes", "no"):
        return value == "yes"
    if isinstance(default, (tuple, list)) and isinstance(value, str):
        return tuple(int(v) for v in value.split(",") if v.strip())
    return value


def _sdk_kwargs(ctx):
    """The keyword arguments of :func:`fiftyone_ncl.compute_correspondence`."""
    p = ctx.params
    method = p.get("method", ncl.correspondence.DEFAULT_METHOD)
    kwargs = {
        "caption_field": p.get("caption_field", "caption"),
        "method": method,
        "run_key": p.get("run_key", "ncl"),
        "threshold": float(p.get("threshold", 0.5)),
        "overwrite": bool(p.get("overwrite", False)),
        "store_embeddings": bool(p.get("store_embeddings", False)),
    }
    source = p.get("source", "clip")
    if source == "clip" and p.get("fine_tune") and get_method_class(method).trains and not p.get("model"):
        pretrained = p.get("clip_pretrained") or "laion2b_s34b_b79k"
        kwargs["towers"] = "open_clip"
        kwargs["clip_model"] = p.get("clip_model") or "ViT-B-32"
        kwargs["clip_pretrained"] = None if pretrained == "random" else pretrained
    elif source == "clip":
        pretrained = p.get("clip_pretrained") or "laion2b_s34b_b79k"
        kwargs["encoder"] = "open_clip:%s:%s" % (p.get("clip_model") or "ViT-B-32", pretrained)
        if p.get("image_cache_field"):
            kwargs["image_embeddings"] = p["image_cache_field"]
        if p.get("text_cache_field"):
            kwargs["text_embeddings"] = p["text_cache_field"]
    elif source == "fields":
        kwargs["image_embeddings"] = p.get("image_field")
        kwargs["text_embeddings"] = p.get("text_field")
    else:
        kwargs["image_encoder"] = "pixels:%d" % int(p.get("image_size", 28))
        kwargs["image_size"] = int(p.get("image_size", 28))
        kwargs["text_encoder"] = "sentence-transformers"
    if p.get("model"):
        kwargs["model"] = p["model"]
        return kwargs
    cls = get_method_class(method)
    defaults = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
    for name in getattr(cls, "form_options", ()):
        if name in p and p[name] is not None:
            kwargs[name] = _parse_option(p[name], defaults.get(name))
    return kwargs
