"""Sharded correspondence: the encoder work of a run queued as N shard
operations for ``fiftyone delegated launch`` workers, then one global step
(:func:`fiftyone_ncl.queue_sharded_scoring`).

* ``queue_sharded_correspondence``: the compute form plus a number of
  shards; queues them (runs at once: it only queues)
* ``score_shard``: one shard, on a worker (queued by the SDK, unlisted)
* ``finalize_sharded_correspondence``: the global step (queued by the last
  shard, unlisted)
* ``sharded_correspondence_jobs``: a job's progress per shard; rerun the
  failed shards, or run the global step
"""
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import icons, with_progress
from .compute import compute_inputs, compute_kwargs, form_params

# recipes whose method reads pixels or images itself: nothing for shards to split
_NOT_SHARDABLE = ("cnn_minilm", "open_clip_finetune")
WORKERS_HINT = ("Start one worker per GPU on machines that share this database and plugins dir, e.g. "
                "`CUDA_VISIBLE_DEVICES=0 fiftyone delegated launch`")


class QueueShardedCorrespondence(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="queue_sharded_correspondence",
            label="Compute correspondence (sharded)",
            description="Split the embedding work of a run over several delegated workers, then score and "
            "write it once",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        ready = compute_inputs(ctx, inputs)
        ready &= _shard_inputs(ctx, inputs)
        if not ready:
            inputs.view("not_ready", types.Notice(label="Queue is disabled until the fields marked above are valid"))
        return types.Property(inputs, view=types.View(label="Compute correspondence (sharded)"))

    def execute(self, ctx):
        params = form_params(ctx)
        kwargs = compute_kwargs(params)
        # chunk_size / chunk_delay: not in the form; scripted callers (tests) may pass them
        hooks = {k: params[k] for k in ("chunk_size", "chunk_delay") if params.get(k) is not None}
        if params.get("encoder_batch_size"):
            kwargs["batch_size"] = int(params["encoder_batch_size"])
        job = ncl.queue_sharded_scoring(
            ctx.target_view(), shards=int(params.get("shards", 2)), finalize=bool(params.get("finalize", True)),
            delegation_target=ctx.delegation_target, **hooks, **kwargs)
        status = job.status()
        if not ctx.delegated:
            ctx.ops.notify("Queued %d shards (job %s)" % (len(status["shards"]), job.id), variant="success")
        return {"job_id": job.id, "shards": len(status["shards"]), "samples": status["samples"],
                "message": WORKERS_HINT}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("job_id", label="Job")
        outputs.int("shards", label="Shards queued")
        outputs.int("samples", label="Samples")
        outputs.str("message", label="Workers")
        return types.Property(outputs)


def _shard_inputs(ctx, inputs):
    """The shard count and when to finish; returns whether they are valid."""
    params = form_params(ctx)
    ready = True
    if params.get("recipe") in _NOT_SHARDABLE:
        description = ("Shards split encoder work over stored images and captions; choose another recipe, or run "
                       "'Compute correspondence' as one delegated operation")
        inputs.view("not_shardable", types.Warning(label="This recipe trains on pixels or images end to end",
                                                   description=description))
        prop = inputs.str("recipe_not_shardable", required=True, view=types.HiddenView())
        prop.invalid, prop.error_message = True, description
        ready = False
    most = max(1, len(ctx.target_view()) // 2) if ctx.dataset is not None else 1
    prop = inputs.int("shards", default=2, min=1, max=most, required=False, label="Shards",
                      description="Operations to queue, one per worker (each embeds its part of the samples)")
    shards = params.get("shards", 2)
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= most:
        prop.invalid = True
        prop.error_message = "a whole number from 1 to %d (each shard needs 2 samples or more)" % most
        ready = False
    batch = params.get("encoder_batch_size")
    prop = inputs.int("encoder_batch_size", min=1, required=False, label="Encoder batch size",
                      description="Images or captions per encoder batch (empty: the encoder's default); shards "
                      "split whole batches, so there are at most as many shards as batches")
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        prop.invalid, prop.error_message = True, "a whole number >= 1"
        ready = False
    inputs.bool("finalize", default=True, label="Score and write when the last shard is done",
                description="Otherwise run the global step from 'Sharded correspondence jobs'",
                view=types.CheckboxView())
    inputs.view("workers", types.Notice(label=WORKERS_HINT))
    return ready


class ScoreShard(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="score_shard",
            label="Correspondence shard",
            description="Embed one shard of a sharded correspondence run (queued by the SDK)",
            unlisted=True,
            execute_as_generator=True,
            allow_immediate_execution=False,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
            rerunnable=False,  # a shard is re-run by its job (job.rerun_shard), which discards the old attempt
            risk_level=types.RiskLevel.LOW,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("job_id", required=True, label="Job")
        inputs.int("shard", required=True, min=0, label="Shard")
        inputs.str("label", required=False, label="Label")
        return types.Property(inputs)

    def resolve_run_name(self, ctx):
        return ctx.params.get("label") or "ncl shard %s" % ctx.params.get("shard")

    def execute(self, ctx):
        job_id, shard = ctx.params["job_id"], int(ctx.params["shard"])
        summary = yield from with_progress(ctx, lambda progress: ncl.run_shard(job_id, shard, progress=progress))
        return summary


class FinalizeShardedCorrespondence(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="finalize_sharded_correspondence",
            label="Finish sharded correspondence",
            description="Score a sharded run with its shards' embeddings and write it",
            unlisted=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
            rerunnable=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        inputs.str("job_id", required=True, label="Job")
        inputs.str("label", required=False, label="Label")
        return types.Property(inputs)

    def resolve_run_name(self, ctx):
        return ctx.params.get("label") or "ncl global step"

    def execute(self, ctx):
        job_id = ctx.params["job_id"]
        summary = yield from with_progress(
            ctx, lambda progress: ncl.finalize_sharded_scoring(job_id, progress=progress).summary())
        if not ctx.delegated:
            yield ctx.trigger("reload_dataset")
        return summary


class ShardedCorrespondenceJobs(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="sharded_correspondence_jobs",
            label="Sharded correspondence jobs",
            description="Progress of sharded runs per shard; rerun failed shards or run the global step",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_execution_options(self, ctx):
        # the global step scores and writes the run: a worker's job
        finalize = ctx.params.get("action") == "finalize"
        return foo.ExecutionOptions(allow_immediate_execution=True, allow_delegated_execution=True,
                                    default_choice_to_delegated=finalize)

    def resolve_input(self, ctx):
        inputs = types.Object()
        jobs = ncl.list_sharded_jobs(ctx.dataset) if ctx.dataset is not None else []
        if not jobs:
            inputs.view("no_jobs", types.Warning(label="No sharded jobs on this dataset",
                                                 description="Queue one with 'Compute correspondence (sharded)'"))
            prop = inputs.str("job_id", required=True, view=types.HiddenView())
            prop.invalid = True
            prop.error_message = "This dataset has no sharded correspondence jobs"
            return types.Property(inputs)
        choices = types.DropdownView()
        for job in jobs:
            choices.add_choice(job["job_id"], label="%s: run %r, %s (%.0f%%)" % (
                job["job_id"][-6:], job["run_key"], job["state"], 100 * job["progress"]))
        job_id = ctx.params.get("job_id") or jobs[0]["job_id"]
        inputs.enum("job_id", choices.values(), default=jobs[0]["job_id"], required=False, label="Job", view=choices)
        status = next((j for j in jobs if j["job_id"] == job_id), jobs[0])
        inputs.md(_table(status), name="shards_table")
        if status.get("message"):
            inputs.view("next_step", types.Notice(label=status["message"]))
        actions = types.RadioGroup(orientation="horizontal")
        actions.add_choice("status", label="Show status")
        actions.add_choice("rerun", label="Rerun failed shards")
        actions.add_choice("finalize", label="Score and write (global step)")
        inputs.enum("action", actions.values(), default="status", required=False, label="Action", view=actions)
        return types.Property(inputs, view=types.View(label="Sharded correspondence jobs"))

    def execute(self, ctx):
        job = ncl.load_sharded_job(ctx.params["job_id"])
        action = ctx.params.get("action", "status")
        if action == "rerun":
            broken = [s["index"] for s in job.status()["shards"] if s["state"] in ("failed", "lost")]
            for index in broken:
                job.rerun_shard(index)
            yield ctx.ops.notify("Re-queued shards %s" % broken if broken else "No failed shards", variant="info")
        elif action == "finalize":
            yield from with_progress(ctx, lambda progress: job.finalize(progress=progress))
            if not ctx.delegated:
                yield ctx.trigger("reload_dataset")
        status = job.status()
        return {"state": status["state"], "progress": status["progress"], "shards": _table(status),
                "message": status["message"] or ""}

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("state", label="State")
        outputs.float("progress", label="Progress")
        outputs.str("shards", label="Shards", view=types.MarkdownView(read_only=True))
        outputs.str("message", label="Next step")
        return types.Property(outputs)


def _table(status):
    """A markdown table of a job's shards."""
    rows = ["| shard | state | progress | items | attempt | worker |", "|---|---|---|---|---|---|"]
    for s in status["shards"]:
        items = ", ".join("%d %s" % (n, "images" if side == "image" else "captions") for side, n in s["items"].items())
        rows.append("| %d | %s | %.0f%% | %s | %d | %s |" % (
            s["index"], s["state"], 100 * s["progress"], items, s["attempt"], s["worker"] or ""))
    fin = status.get("finalize") or {}
    rows.append("\nglobal step: %s%s" % (fin.get("state") or "waiting for the shards",
                                         " (%s)" % fin["error"] if fin.get("error") else ""))
    return "\n".join(rows)
