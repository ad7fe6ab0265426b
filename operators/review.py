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
            description="Tag the samples a run flags (below a threshold, or the k least confident)",
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
            modes.add_choice("threshold", label="Below a threshold")
            modes.add_choice("top_k", label="Least confident k")
            inputs.enum("mode", modes.values(), default="threshold", label="Select", view=modes)
            if ctx.params.get("mode", "threshold") == "threshold":
                threshold = ctx.dataset.get_brain_info(key).config.threshold
                inputs.float("threshold", default=threshold, min=0.0, max=1.0, label="Threshold",
                             description="Tag samples whose confidence is below this")
            else:
                inputs.int("top_k", default=100, min=1, required=False, label="k")
            inputs.str("tag", default=ncl.DEFAULT_TAG, required=False, label="Tag")
        return types.Property(inputs, view=types.View(label="Tag suspected mismatches"))

    def execute(self, ctx):
        p = ctx.params
        top_k = p.get("top_k") if p.get("mode") == "top_k" else None
        threshold = None if top_k is not None else p.get("threshold")
        n = ncl.tag_mismatches(
            ctx.target_view(), p["run_key"], threshold=threshold, top_k=top_k, tag=p.get("tag", ncl.DEFAULT_TAG)
        )
        ctx.trigger("reload_dataset")
        return {"tagged": n}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.int("tagged", label="Samples tagged")
        return types.Property(outputs)


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
            description="Open the flagged pairs, lowest confidence first, as a saved view",
            dynamic=True,
            risk_level=types.RiskLevel.LOW,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is not None:
            threshold = ctx.dataset.get_brain_info(key).config.threshold
            inputs.float("threshold", default=threshold, min=0.0, max=1.0, label="Threshold",
                         description="Show samples whose confidence is below this")
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
