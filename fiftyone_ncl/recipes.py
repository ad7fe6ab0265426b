"""Input recipes: where a run's image and caption inputs come from.

A recipe is decided before any method is built, from the caller's arguments
(or a named preset the App and Python share), and the FiftyOne side reads the
collection by it (:func:`fiftyone_ncl.fo.embeddings.gather_inputs`). It
also fixes how the method trains: heads over frozen embeddings, a small CNN
on pixels, or an open_clip model fine-tuned end to end.

Presets (:func:`list_recipes`):

* ``"open_clip"``: images and captions embedded by one open_clip model
  (``encoder``, default ViT-B-32 with LAION-2B weights), heads over them;
* ``"fields"``: embeddings already stored in vector fields
  (``image_embeddings`` and ``text_embeddings`` name them);
* ``"pixels_minilm"``: resized raw pixels and the bundled all-MiniLM-L6-v2
  captions, aligned by trained heads (offline; small images);
* ``"cnn_minilm"``: the same pixels through a small CNN trained end to end;
* ``"open_clip_finetune"``: an open_clip model fine-tuned end to end on the
  images and captions (a GPU is recommended).

Nothing here imports FiftyOne.
"""
import warnings
from dataclasses import dataclass, replace

DEFAULT_CLIP = "open_clip:ViT-B-32:laion2b_s34b_b79k"
DEFAULT_PIXELS = "pixels:28"
DEFAULT_TEXT = "sentence-transformers"

PRESETS = {
    "open_clip": "open_clip model: images and captions embedded by one open_clip model, heads over them",
    "fields": "precomputed fields: image and caption embeddings already stored as vector fields",
    "pixels_minilm": "pixels + MiniLM: raw pixels of small images and all-MiniLM-L6-v2 captions, aligned by heads",
    "cnn_minilm": "CNN + MiniLM: a small CNN trained end to end on pixels, MiniLM captions",
    "open_clip_finetune": "open_clip fine-tuned end to end on the images and captions (GPU recommended)",
}

# SDK arguments that used to be method options or a parameter of their own
_DEPRECATED = ("towers", "clip_model", "clip_pretrained", "image_size")


@dataclass(frozen=True)
class InputRecipe:
    """Where each side of the pairs comes from, and how the method trains.

    Attributes:
        towers: ``"frozen"`` (heads over embeddings), ``"cnn"`` (pixels through
            a CNN trained end to end) or ``"open_clip"`` (open_clip fine-tuned)
        image_embeddings, text_embeddings: a vector field name (read where
            set; with an encoder, missing entries are computed and cached
            there) or an array; None to compute them with the encoder
        image_encoder, text_encoder: encoder specs or objects (see
            :func:`fiftyone_ncl.encoders.get_encoder`); for ``"cnn"`` the
            image encoder must be a pixel spec (its size and colour are the
            CNN's input), for ``"open_clip"`` an open_clip spec naming the
            model to fine-tune and its starting weights
        name: the preset it came from, if any
    """

    towers: str = "frozen"
    image_embeddings: object = None
    text_embeddings: object = None
    image_encoder: object = None
    text_encoder: object = None
    name: str = None

    def describe(self):
        """A JSON-friendly summary for the run record."""

        def show(x):
            if x is None or isinstance(x, str):
                return x
            return getattr(x, "name", None) or "array %s" % (getattr(x, "shape", "?"),)

        return {
            "recipe": self.name,
            "towers": self.towers,
            "image_embeddings": show(self.image_embeddings),
            "text_embeddings": show(self.text_embeddings),
            "image_encoder": show(self.image_encoder),
            "text_encoder": show(self.text_encoder),
        }


def list_recipes():
    """The preset recipe names with a one-line description each."""
    return dict(PRESETS)


def make_recipe(
    recipe=None,
    image_embeddings=None,
    text_embeddings=None,
    encoder=None,
    image_encoder=None,
    text_encoder=None,
    checkpoint_spec=None,
    **deprecated,
):
    """Resolves the SDK's input arguments into one :class:`InputRecipe`.

    Args:
        recipe (None): a preset name (:func:`list_recipes`), an
            :class:`InputRecipe`, or None to decide from the other arguments:
            given embeddings and encoders as they are; with nothing at all,
            the ``"open_clip"`` preset
        image_embeddings, text_embeddings, encoder, image_encoder,
        text_encoder: as in :func:`fiftyone_ncl.compute_correspondence`;
            ``encoder`` sets both sides (and names the open_clip model of the
            open_clip presets)
        checkpoint_spec (None): the input spec of a trained model to score
            with: its towers decide the recipe's
        **deprecated: ``towers``, ``clip_model``, ``clip_pretrained``,
            ``image_size`` (older SDK arguments; still honoured, with a warning)

    Returns:
        an :class:`InputRecipe`
    """
    unknown = sorted(set(deprecated) - set(_DEPRECATED))
    if unknown:
        raise TypeError("unexpected argument(s) %s" % ", ".join(unknown))
    legacy = dict(deprecated)
    if legacy:
        warnings.warn(
            "%s are deprecated: choose a recipe (e.g. recipe='cnn_minilm', or "
            "image_encoder='pixels:32' / encoder='open_clip:<model>:<weights>')" % ", ".join(sorted(legacy)),
            DeprecationWarning,
            stacklevel=3,
        )
    if isinstance(recipe, InputRecipe):
        base = recipe
    elif recipe is None:
        base = InputRecipe(towers=legacy.get("towers", "frozen"))
    elif recipe in PRESETS:
        base = _preset(recipe)
    else:
        raise ValueError("unknown recipe %r; available: %s" % (recipe, ", ".join(PRESETS)))
    if checkpoint_spec and checkpoint_spec.get("towers") and checkpoint_spec["towers"] != base.towers:
        if recipe is not None:
            raise ValueError(
                "the model was trained with %r towers but recipe %r uses %r"
                % (checkpoint_spec["towers"], getattr(base, "name", recipe), base.towers)
            )
        base = replace(base, towers=checkpoint_spec["towers"])

    changes = {k: v for k, v in dict(
        image_embeddings=image_embeddings, text_embeddings=text_embeddings,
        image_encoder=image_encoder if image_encoder is not None else encoder,
        text_encoder=text_encoder if text_encoder is not None else encoder,
    ).items() if v is not None}
    out = replace(base, **changes)
    out = _legacy(out, legacy, checkpoint_spec)
    return _complete(out, checkpoint_spec)


def _preset(name):
    if name == "open_clip":
        return InputRecipe(image_encoder=DEFAULT_CLIP, text_encoder=DEFAULT_CLIP, name=name)
    if name == "fields":
        return InputRecipe(name=name)
    if name == "pixels_minilm":
        return InputRecipe(image_encoder=DEFAULT_PIXELS, text_encoder=DEFAULT_TEXT, name=name)
    if name == "cnn_minilm":
        return InputRecipe(towers="cnn", image_encoder=DEFAULT_PIXELS, text_encoder=DEFAULT_TEXT, name=name)
    return InputRecipe(towers="open_clip", image_encoder=DEFAULT_CLIP, text_encoder=DEFAULT_CLIP, name=name)


def _legacy(recipe, legacy, checkpoint_spec):
    """Folds the deprecated arguments into the recipe."""
    if not legacy:
        return recipe
    towers = legacy.get("towers", recipe.towers)
    changes = {"towers": towers}
    if towers == "cnn" and "image_size" in legacy:
        changes["image_encoder"] = "pixels:%d" % int(legacy["image_size"])
    if towers == "open_clip" and ("clip_model" in legacy or "clip_pretrained" in legacy):
        model = legacy.get("clip_model", "ViT-B-32")
        weights = legacy.get("clip_pretrained", "laion2b_s34b_b79k")
        spec = "open_clip:%s:%s" % (model, "random" if weights is None else weights)
        changes.update(image_encoder=spec, text_encoder=spec)
    return replace(recipe, **changes)


def _complete(recipe, checkpoint_spec):
    """Fills in what the towers imply and checks that the sides fit them."""
    towers = recipe.towers
    if towers == "cnn":
        if recipe.image_embeddings is not None:
            raise ValueError("the CNN recipe trains its own image tower on pixels; do not pass image_embeddings")
        image_encoder = recipe.image_encoder
        if checkpoint_spec and image_encoder is None:
            channels, size = checkpoint_spec["images"][0], checkpoint_spec["images"][-1]
            image_encoder = "pixels:%d:%s" % (size, "gray" if channels == 1 else "rgb")
        image_encoder = image_encoder or DEFAULT_PIXELS
        if not str(getattr(image_encoder, "name", image_encoder)).startswith("pixels"):
            raise ValueError("the CNN recipe reads pixels: image_encoder must be 'pixels[:<size>[:rgb]]'")
        return replace(recipe, image_encoder=image_encoder, text_encoder=recipe.text_encoder or DEFAULT_TEXT)
    if towers == "open_clip":
        if recipe.image_embeddings is not None or recipe.text_embeddings is not None:
            raise ValueError(
                "the open_clip fine-tuning recipe trains on images and captions; "
                "do not pass image_embeddings / text_embeddings"
            )
        spec = recipe.image_encoder or recipe.text_encoder or DEFAULT_CLIP
        if checkpoint_spec and checkpoint_spec.get("clip_model"):
            spec = "open_clip:%s:random" % checkpoint_spec["clip_model"]  # the checkpoint holds the weights
        if not str(getattr(spec, "name", spec)).startswith("open_clip"):
            raise ValueError("the open_clip fine-tuning recipe needs an open_clip encoder spec")
        return replace(recipe, image_encoder=spec, text_encoder=spec)
    if towers != "frozen":
        raise ValueError("unknown towers %r; expected 'frozen', 'cnn' or 'open_clip'" % towers)
    if all(x is None for x in (recipe.image_embeddings, recipe.text_embeddings,
                               recipe.image_encoder, recipe.text_encoder)):
        if recipe.name == "fields":
            raise ValueError("the 'fields' recipe needs image_embeddings and text_embeddings (field names)")
        return replace(recipe, image_encoder=DEFAULT_CLIP, text_encoder=DEFAULT_CLIP, name=recipe.name or "open_clip")
    return recipe
