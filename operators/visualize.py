"""Looking at a run: UMAP maps in the Embeddings panel, confidence plot."""
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import icons, run_key_input, with_progress


class VisualizeSubspaces(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="visualize_subspaces",
            label="Visualize correspondence embeddings",
            description="Compute (or open) UMAP maps of a run's MII / MEI or plain embeddings",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is None:
            return types.Property(inputs, view=types.View(label="Visualize correspondence embeddings"))
        spaces = ncl.embedding_spaces(ctx.dataset, key)
        if not spaces:
            inputs.view(
                "no_spaces",
                types.Warning(
                    label="Run '%s' stored no embeddings" % key,
                    description="Re-run it with 'store embeddings' (DisNCL always stores MII/MEI)",
                ),
            )
            prop = inputs.str("space", required=True, view=types.HiddenView())
            prop.invalid = True
            prop.error_message = "no embeddings stored"
        else:
            choices = types.DropdownView()
            for s in spaces:
                choices.add_choice(s, label=s.replace("_", " "))
            inputs.enum("space", choices.values(), default=spaces[0], required=False,
                        label="Space", description="Which stored embeddings to map", view=choices)
            inputs.bool("recompute", default=False, label="Recompute the map if it exists",
                        view=types.CheckboxView())
        return types.Property(inputs, view=types.View(label="Visualize correspondence embeddings"))

    def execute(self, ctx):
        key = ctx.params["run_key"]
        space = ctx.params["space"]
        recompute = bool(ctx.params.get("recompute", False))

        def run(progress):
            return ncl.compute_visualizations(
                ctx.dataset, key, spaces=[space], overwrite=recompute, progress=None
            )

        keys = yield from with_progress(ctx, run)
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
            yield ctx.ops.open_panel(
                "Embeddings",
                layout="horizontal",
                is_active=True,
                state={"openKey": keys[space], "colorField": ncl.field_name(key, "confidence")},
            )
            # the App 1.22 panel opens on its list of maps whatever the state
            # says (checked in tests/browser): tell the user what to pick
            yield ctx.ops.notify(
                "Map '%s' is ready: open it in the Embeddings panel and colour by '%s'"
                % (keys[space], ncl.field_name(key, "confidence")),
                variant="success",
            )


class PlotConfidence(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="plot_confidence",
            label="Plot correspondence confidence",
            description="A run's decision: its statistic next to decoy pairs', the cut, the estimate and the confidence",
            dynamic=True,
            risk_level=types.RiskLevel.LOW,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        run_key_input(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Plot correspondence confidence"))

    def execute(self, ctx):
        return {"plot": ncl.figure_json(ncl.confidence_figure(ctx.dataset, ctx.params["run_key"]))}

    def resolve_output(self, ctx):
        outputs = types.Object()
        plot = (ctx.results or {}).get("plot") or {}
        # not named "plot" like the result: the App draws a property's value
        # (the whole figure dict) in place of the view's data, i.e. nothing
        outputs.view("figure", types.PlotlyView(
            label="Decision", data=plot.get("data", []), layout=plot.get("layout", {}),
            config={"displaylogo": False}))
        return types.Property(outputs, view=types.View(label="Correspondence confidence"))
