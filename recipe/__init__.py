"""The recipe: a synthetic event world and the tasks drawn from it, for training the built-in model.

Kept out of the product's runtime import path: nothing in ``vidlm``, ``ingest``, ``index`` or
``app`` imports it at module level, and it imports none of them. Public entry points:

- :func:`recipe.world.make_scene` / :func:`recipe.world.render_frames`: a scene is a pure
  function of ``(seed, WorldParams)``; frames render to uint8 ``[T, H, W, 3]`` at any seconds.
- :func:`recipe.tasks.make_tasks`: grounding, timestamped QA, dense captions, counting, ordering.
- :func:`recipe.synth.write_dataset`: real H.264 ``.mp4`` files (true PTS, VFR kept) plus
  ``events.jsonl``; backs ``vidlm synth``.
"""
