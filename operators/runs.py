"""Run management: info, rename, delete (one verb per operator)."""
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import icons, run_key_input


class GetCorrespondenceInfo(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="get_correspondence_info",
            label="Correspondence run info",
            description="Show a run's method, settings, counts and metrics",
            dynamic=True,
            risk_level=types.RiskLevel.LOW,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        run_key_input(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Correspondence run info"))

    def execute(self, ctx):
        info = ncl.get_run_info(ctx.dataset, ctx.params["run_key"])
        info.pop("info", None)  # training history can be long; the SDK has it
        config = dict(info.pop("config", None) or {})
        estimate, health = "", {}
        if info.get("state", "complete") in ("complete", "stale"):
            results = ncl.load_run_results(ctx.dataset, ctx.params["run_key"])
            estimate, health = ncl.describe_estimate(results), results.health
        return {
            "estimate": estimate,
            "health": health.get("verdict", ""),
            "health_summary": health.get("summary", ""),
            "run_key": info["run_key"],
            "state": info.get("state", "complete"),
            "message": info.get("message") or "",
            "method": config.get("method_name"),
            "caption_field": config.get("caption_field"),
            "timestamp": info.get("timestamp", ""),
            "pairs": info.get("pairs"),
            "flagged": info.get("flagged"),
            "decision": "%s (level %s)" % (config.get("decision", "probability"), config.get("level")),
            "checkpoint": config.get("checkpoint") or "",
            "config": config,
            "metrics": info.get("metrics") or {},
        }

    def resolve_output(self, ctx):
        outputs = types.Object()
        for name, label in (
            ("run_key", "Run key"),
            ("state", "State (complete, stale, incomplete, being written)"),
            ("message", "What to do"),
            ("estimate", "Estimate"),
            ("health", "Health (ok, or check: see why)"),
            ("health_summary", "Health checks"),
            ("method", "Method"),
            ("caption_field", "Caption field"),
            ("timestamp", "Created"),
            ("checkpoint", "Checkpoint"),
        ):
            outputs.str(name, label=label)
        outputs.int("pairs", label="Pairs scored")
        outputs.int("flagged", label="Pairs flagged")
        outputs.str("decision", label="Decision")
        outputs.obj("config", label="Config", view=types.JSONView())
        outputs.obj("metrics", label="Metrics", view=types.JSONView())
        return types.Property(outputs, view=types.View(label="Correspondence run info"))


class RenameCorrespondenceRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="rename_correspondence_run",
            label="Rename correspondence run",
            description="Rename a run and the fields it wrote",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is not None:
            prop = inputs.str("new_run_key", required=True, label="New run key")
            new = ctx.params.get("new_run_key")
            problem = None if new is None else ncl.validate_run_key(ctx.dataset, new)
            if problem:
                prop.invalid = True
                prop.error_message = problem
        return types.Property(inputs, view=types.View(label="Rename correspondence run"))

    def execute(self, ctx):
        ncl.rename_run(ctx.dataset, ctx.params["run_key"], ctx.params["new_run_key"])
        ctx.trigger("reload_dataset")
        return {"run_key": ctx.params["new_run_key"]}


class DeleteCorrespondenceRun(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="delete_correspondence_run",
            label="Delete correspondence run",
            description="Delete a run together with the fields and visualizations it wrote",
            dynamic=True,
            risk_level=types.RiskLevel.HIGH,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is not None and key in ctx.dataset.list_brain_runs():
            fields = ["%s_%s" % (key, s) for s in ctx.dataset.get_brain_info(key).config.fields]
            inputs.view(
                "warning",
                types.Warning(label="This deletes the fields %s" % ", ".join(fields)),
            )
        return types.Property(inputs, view=types.View(label="Delete correspondence run"))

    def execute(self, ctx):
        ncl.delete_run(ctx.dataset, ctx.params["run_key"])
        ctx.trigger("reload_dataset")
        return {"deleted": ctx.params["run_key"]}
