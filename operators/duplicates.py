"""Review duplicate groups: open a group of pasted captions (or of copies of
one image with contradicting captions) and fix it at once."""
import fiftyone.operators as foo
import fiftyone.operators.types as types

import fiftyone_ncl as ncl

from ._utils import icons, run_key_input

# what the operator does besides opening the group
ACTIONS = {
    "view": "Only open the group",
    "tag": "Tag its samples",
    "remove": "Remove the grouped captions (undo: 'Restore original captions')",
    "replace": "Replace the grouped captions with a text (undo: 'Restore original captions')",
}


def _label(group):
    text = group.get("caption") or " | ".join(group.get("captions") or [])
    if len(text) > 60:
        text = text[:57] + "..."
    kind = "pasted caption" if group["kind"] == "caption" else "duplicate image"
    return "%s: %s on %d images, \"%s\"" % (group["id"], kind, group["size"], text)


class ReviewDuplicateGroups(foo.Operator):
    @property
    def config(self):
        return foo.OperatorConfig(
            name="review_duplicate_groups",
            label="Review duplicate groups",
            description="Open a caption pasted onto unrelated images (or copies of one image with contradicting "
            "captions) as a view, and fix the group at once",
            dynamic=True,
            risk_level=types.RiskLevel.MEDIUM,
            **icons(),
        )

    def resolve_input(self, ctx):
        inputs = types.Object()
        key = run_key_input(ctx, inputs)
        if key is not None:
            _group_inputs(ctx, inputs, key)
        return types.Property(inputs, view=types.View(label="Review duplicate groups"))

    def execute(self, ctx):
        p = ctx.params
        key, group, action = p["run_key"], p.get("group") or None, p.get("action", "view")
        out = {"group": group or "all", "action": action}
        if action == "tag":
            out["tagged"] = ncl.tag_duplicate_group(ctx.dataset, key, group, tag=p.get("tag") or ncl.DUPLICATE_TAG)
        elif action in ("remove", "replace"):
            caption = p.get("caption") if action == "replace" else None
            out["changed"] = ncl.replace_duplicate_captions(ctx.dataset, key, group, caption=caption)
        view = ncl.duplicate_group_view(ctx.dataset, key, group)
        out["count"] = len(view)
        ctx.ops.set_view(view=view)
        if action != "view":
            ctx.trigger("reload_dataset")
        return out

    def resolve_output(self, ctx):
        outputs = types.Object()
        outputs.str("group", label="Group")
        outputs.int("count", label="Samples in the view")
        outputs.int("tagged", label="Samples tagged")
        outputs.int("changed", label="Samples whose captions changed")
        return types.Property(outputs)


def _group_inputs(ctx, inputs, key):
    groups = ncl.duplicate_groups(ctx.dataset, key)
    if not groups:
        inputs.view("no_groups", types.Notice(label="Run '%s' found no duplicate groups" % key))
        return
    choices = types.DropdownView()
    choices.add_choice("", label="All groups (view only)")
    for g in groups:
        choices.add_choice(g["id"], label=_label(g))
    inputs.enum("group", choices.values(), default=groups[0]["id"], required=False, label="Group",
                description="Largest first", view=choices)
    group = ctx.params.get("group", groups[0]["id"])
    actions = types.RadioGroup(orientation="vertical")
    for name, label in ACTIONS.items():
        if group or name in ("view", "tag"):
            actions.add_choice(name, label=label)
    inputs.enum("action", actions.values(), default="view", required=False, label="Then", view=actions)
    action = ctx.params.get("action", "view")
    if action == "tag":
        inputs.str("tag", default=ncl.DUPLICATE_TAG, required=False, label="Tag")
    elif action == "replace":
        inputs.str("caption", required=True, label="New caption",
                   description="Written in place of every grouped caption")
