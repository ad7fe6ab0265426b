"""Review operators: tag suspects, open them, accept or undo corrections."""
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import caption_field_input, icons, run_key_input


class TagMismatches(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="tag_mismatches",
            label="Tag suspected mismatches",
            description="Tag the samples a run flags (or those below a confidence, or the k least confident)",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Tag suspects in")
        key = run_key_input(ctx, inputs)
        if key is not None:
            modes = types.RadioGroup(orientation="horizontal")
            modes.add_choice("decision", label="The run's flags")
            modes.add_choice("threshold", label="Below a confidence")
            modes.add_choice("top_k", label="Least confident k")
            inputs.enum("mode", modes.values(), default="decision", label="Select", view=modes)
            mode = ctx.params.get("mode", "decision")
            if mode == "threshold":
                inputs.float("threshold", default=0.5, min=0.0, max=1.0, label="Confidence",
                             description="Tag samples whose confidence (probability of a match) is below this")
            elif mode == "top_k":
                inputs.int("top_k", default=100, min=1, required=False, label="k")
            inputs.str("tag", default=ncl.DEFAULT_TAG, required=False, label="Tag")
        return types.Property(inputs, view=types.View(label="Tag suspected mismatches"))

    def execute(self, ctx):
        p = ctx.params
        mode = p.get("mode", "decision")
        top_k = p.get("top_k") if mode == "top_k" else None
        threshold = p.get("threshold") if mode == "threshold" else None
        n = ncl.tag_mismatches(
            ctx.target_view(), p["run_key"], threshold=threshold, top_k=top_k, tag=p.get("tag", ncl.DEFAULT_TAG)
        )
        ctx.trigger("reload_dataset")
        return {"tagged": n}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("tagged", label="Samples tagged")
        return types.Property(outputs)


_DECISIONS = (
    ("fdr", "At most a share of false flags", "Flag the largest set of lowest scores whose estimated share of "
     "matched pairs is at most this (conservative)", 0.1),
    ("probability", "Probability of a match below", "Flag pairs whose probability of matching is below this", 0.5),
    ("fraction", "A fraction of the collection", "Flag this fraction of the pairs, lowest scores first", 0.1),
    ("top_k", "The k lowest", "Flag this many pairs, lowest scores first", 100),
    ("f1", "Learn the cut from my marks", "The cut that best separates the pairs marked in a boolean field "
     "(True: matched, False: mismatched)", None),
)


class DecideMismatches(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="decide_mismatches",
            label="Change which pairs are flagged",
            description="Re-decide a run's flags from its stored scores (no retraining) and re-tag",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is None:
            return types.Property(inputs, view=types.View(label="Change which pairs are flagged"))
        results = ncl.load_run_results(ctx.dataset, key)
        inputs.view("estimate", types.Notice(label=ncl.describe_estimate(results)))
        # the current decision, to choose the next one from (binned: cheap
        # to rebuild on every edit of the form)
        current_plot = ncl.figure_json(ncl.confidence_figure(ctx.dataset, key))
        inputs.view("current_plot", types.PlotlyView(
            label="Current decision", data=current_plot["data"], layout=current_plot["layout"],
            config={"displaylogo": False, "responsive": True}))
        choices = types.RadioGroup()
        for mode, label, description, _ in _DECISIONS:
            choices.add_choice(mode, label=label, description=description)
        current = results.decision.get("mode") if results.decision.get("mode") in dict.fromkeys(
            m for m, *_ in _DECISIONS) else "fdr"
        inputs.enum("decision", choices.values(), default=current, label="Flag", view=choices)
        mode = ctx.params.get("decision", current)
        default = next(level for m, _, _, level in _DECISIONS if m == mode)
        if mode == current and results.decision.get("level") is not None:
            default = results.decision["level"]
        if mode == "top_k":
            inputs.int("level", default=min(int(default), results.n_pairs), min=1, max=results.n_pairs, label="k")
        elif mode == "f1":
            fields = [name for name, f in ctx.dataset.get_field_schema().items()
                      if type(f).__name__ == "BooleanField" and not name.startswith(key + "_")]
            if not fields:
                inputs.view("no_labels", types.Warning(
                    label="No boolean field to learn from",
                    description="Mark some pairs first: a BooleanField, True where the pair matches"))
                prop = inputs.str("labels", required=True, view=types.HiddenView())
                prop.invalid = True
                prop.error_message = "no boolean field of marks"
            else:
                marks = types.DropdownView()
                for name in fields:
                    marks.add_choice(name, label=name)
                inputs.enum("labels", marks.values(), default=fields[0], label="Marks", view=marks)
        else:
            inputs.float("level", default=float(default), min=0.0, max=1.0, label="Level")
        inputs.bool("retag", default=True, label="Re-tag",
                    description="Replace the '%s' tags with the new flags" % ncl.DEFAULT_TAG)
        return types.Property(inputs, view=types.View(label="Change which pairs are flagged"))

    def execute(self, ctx):
        p = ctx.params
        key = p["run_key"]
        mode = p.get("decision") or ncl.load_run_results(ctx.dataset, key).decision.get("mode", "probability")
        level = p.get("level") if mode != "f1" else None
        if mode == "top_k" and level is not None:
            level = int(level)
        results = ncl.decide(ctx.dataset, key, decision=mode, level=level, labels=p.get("labels"))
        tagged = None
        if p.get("retag", True):
            ncl.untag_mismatches(ctx.dataset)
            tagged = ncl.tag_mismatches(ctx.dataset, key)
        ctx.trigger("reload_dataset")
        out = {"flagged": results.n_noisy, "tagged": tagged, "estimate": ncl.describe_estimate(results),
               "run_key": key}
        out.update(_reviewed(ctx.dataset, key, p.get("labels") if mode == "f1" else None))
        out["plot"] = ncl.figure_json(ncl.confidence_figure(ctx.dataset, key))
        return out

    def resolve_output(self, ctx):
        results = ctx.results or {}
        outputs = types.Object()
        outputs.str("estimate", label="Estimate")
        outputs.int("flagged", label="Pairs flagged")
        outputs.int("tagged", label="Samples tagged")
        if results.get("marked") is not None:
            outputs.int("marked", label="Pairs reviewed",
                        description="Pairs with a mark in '%s' (what the cut was learnt from)" % results.get("labels"))
        if results.get("corrected") is not None:
            outputs.int("corrected", label="Captions corrected",
                        description="Samples whose caption was replaced by a suggestion (undo: 'Restore original "
                        "captions')")
        # not named after the result's key: the App draws a property's value
        # (here the whole figure dict) in place of the view's data
        plot = results.get("plot") or {}
        outputs.view("figure", types.PlotlyView(
            label="Decision", data=plot.get("data", []), layout=plot.get("layout", {}),
            config={"displaylogo": False}))
        if results.get("flagged") and results.get("run_key"):
            outputs.view("open_suspects", types.Button(
                label="Open the %d flagged pairs" % results["flagged"],
                operator="%s/review_suspects" % self.plugin_name,
                params={"run_key": results["run_key"]},
            ))
        return types.Property(outputs, view=types.View(label="Flags changed"))


def _reviewed(dataset, run_key, labels=None):
    """What a person has reviewed on the run's samples: pairs marked in the
    boolean field the f1 cut learnt from, captions replaced by suggestions."""
    out = {}
    scored = dataset.exists(ncl.field_name(run_key, "confidence"))
    if labels and dataset.has_sample_field(labels):
        out.update(marked=scored.count(labels), labels=labels)
    caption = dataset.get_brain_info(run_key).config.caption_field
    if dataset.has_sample_field(caption + ncl.ORIGINAL_SUFFIX):
        out["corrected"] = scored.count(caption + ncl.ORIGINAL_SUFFIX)
    return out


class UntagMismatches(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="untag_mismatches",
            label="Untag suspected mismatches",
            description="Remove the suspected-mismatch tag",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Untag")
        inputs.str("tag", default=ncl.DEFAULT_TAG, required=False, label="Tag")
        return types.Property(inputs, view=types.View(label="Untag suspected mismatches"))

    def execute(self, ctx):
        n = ncl.untag_mismatches(ctx.target_view(), tag=ctx.params.get("tag", ncl.DEFAULT_TAG))
        ctx.trigger("reload_dataset")
        return {"untagged": n}


class ReviewSuspects(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="review_suspects",
            label="Review suspected mismatches",
            description="Open the flagged pairs, surest mismatch first, as a saved view",
            dynamic=True,
            risk_level=types.RiskLevel.LOW,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is not None:
            inputs.float("threshold", required=False, min=0.0, max=1.0, label="Confidence below (optional)",
                         description="Empty: the pairs the run flags, surest first; else the samples whose "
                         "confidence (probability of a match) is below this")
            inputs.str("view_name", default="%s-suspects" % key.replace("_", "-"), required=False,
                       label="Saved view name")
        return types.Property(inputs, view=types.View(label="Review suspected mismatches"))

    def execute(self, ctx):
        p = ctx.params
        key = p["run_key"]
        name = ncl.save_suspects_view(ctx.dataset, key, name=p.get("view_name"), threshold=p.get("threshold"))
        view = ctx.dataset.load_saved_view(name)
        # by value: the App's list of saved views predates this one, so
        # set_view(name=...) fails there ("Saved view ... does not exist")
        ctx.ops.set_view(view=view)
        return {"view_name": name, "count": len(view)}


class AcceptSuggestion(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="accept_suggestion",
            label="Accept suggested caption",
            description="Replace the caption of the selected samples with the run's suggestion (undoable)",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Accept suggestions for", default_target="SELECTED_SAMPLES")
        key = run_key_input(ctx, inputs)
        if key is not None:
            caption = ctx.dataset.get_brain_info(key).config.caption_field
            inputs.view(
                "how",
                types.Notice(
                    label="The current caption is kept in '%s_original'; "
                    "'Restore original captions' undoes this" % caption
                ),
            )
        return types.Property(inputs, view=types.View(label="Accept suggested caption"))

    def execute(self, ctx):
        n = ncl.accept_suggestions(ctx.target_view(), ctx.params["run_key"])
        ctx.trigger("reload_dataset")
        return {"changed": n}


class RestoreCaption(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="restore_caption",
            label="Restore original captions",
            description="Undo accepted suggestions: put the original captions back",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.view_target(ctx, action_description="Restore captions of")
        caption_field_input(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Restore original captions"))

    def execute(self, ctx):
        n = ncl.restore_captions(ctx.target_view(), ctx.params.get("caption_field", "caption"))
        ctx.trigger("reload_dataset")
        return {"restored": n}
