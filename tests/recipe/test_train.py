"""The training recipe: the loss falls, runs are reproducible, checkpoints load everywhere."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from recipe.data import (
    IGNORE,
    SampleSpec,
    answer_time_tokens,
    encode,
    encode_branches,
    length_groups,
    make_sample,
    pair_saliency,
    pair_words,
    planned_seconds,
)
from recipe.scene import describe_at
from recipe.tasks import Task
from recipe.train import GroundingHeads, GroundingLosses, TrainConfig, branch_loss, train
from recipe.world import WorldParams
from vidlm.processor import Processor, ProcessorConfig, frame_pair_seconds
from vidlm.tokenizer import Tokenizer

SPEC = SampleSpec(frame_px=64, fps=1.0, world=WorldParams(min_seconds=4.0, max_seconds=8.0))
MULTI = SampleSpec(frame_px=64, fps=1.0, world=WorldParams(min_seconds=6.0, max_seconds=10.0), questions=6)


def answer_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference: mean cross-entropy of the answer tokens of one full sequence."""
    labels = batch.pop("labels")
    logits = model(**batch).logits[:, :-1].float()
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def small(steps: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, accumulation=2, lr=3e-3, warmup_steps=3, log_every=1000,
                       save_every=1000, model_hidden=64, model_layers=2, tokenizer_scenes=40,
                       **({"sample": SPEC} | kw))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("ckpt") / "model"
    losses = train(out, cfg=small(40))
    return out, losses


def test_loss_falls(trained):
    _, losses = trained
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:4])


def test_checkpoint_is_in_the_released_format(trained):
    out, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
            "generation_config.json", "preprocessor_config.json", "video_preprocessor_config.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen3_vl" and config["text_config"]["hidden_size"] == 64


def test_transformers_loads_it_with_the_same_logits(trained):
    transformers = pytest.importorskip("transformers")
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    batch = lm.processor(make_sample(123, SPEC).messages())
    ref = transformers.AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ours, theirs = lm.model(**batch).logits, ref(**batch).logits
    assert (ours - theirs).abs().max() <= 1e-4
    ref_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "When does the red circle enter? <12.5 seconds><|video_pad|><|im_end|>"
    assert ref_tok(text)["input_ids"] == lm.tokenizer.encode(text)


def test_same_seed_same_run(tmp_path):
    a = train(tmp_path / "a", cfg=small(3))
    b = train(tmp_path / "b", cfg=small(3))
    assert a == b
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_worker_processes_give_the_same_run(tmp_path):
    # Sample i is a function of i and the seed alone: workers change the speed, nothing else.
    assert train(tmp_path / "a", cfg=small(3)) == train(tmp_path / "b", cfg=small(3, workers=2))


def test_bf16_autocast_loss_and_gradients(trained):
    # The GPU recipe trains under bf16 autocast; CPU autocast runs the same mixed-dtype graph
    # (float32 norms and rope beside bf16 projections).
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    branches = encode_branches(lm.processor, make_sample(11, MULTI))
    full = branch_loss(lm.model, branches).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = branch_loss(lm.model, branches)
    mixed.backward()
    assert mixed.item() == pytest.approx(full, rel=0.05)
    grads = [p.grad for p in lm.model.parameters() if p.grad is not None]
    assert len(grads) > 10 and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().max()) > 0 for g in grads)


def test_labels_cover_only_the_answer(trained):
    out, _ = trained
    tok = Tokenizer.from_dir(out)
    sample = make_sample(7, SPEC)
    batch = encode(Processor(tok, ProcessorConfig(video_max_tokens_per_frame=4)), sample)
    labelled = batch["labels"][batch["labels"] != IGNORE].tolist()
    assert tok.decode(labelled) == sample.task.answer + "<|im_end|>"
    assert batch["input_ids"][0, -len(labelled):].tolist() == labelled


def test_branches_are_the_full_sequences_split_at_the_video(trained):
    out, _ = trained
    tok = Tokenizer.from_dir(out)
    processor = Processor(tok, ProcessorConfig(video_max_tokens_per_frame=4))
    sample = make_sample(11, MULTI)
    assert len(sample.tasks) >= 4 and len({t.question for t in sample.tasks}) == len(sample.tasks)
    branches = encode_branches(processor, sample)
    prefix = branches.prefix["input_ids"][0].tolist()
    assert prefix[-1] == tok.token_to_id("<|vision_end|>")
    for i, task in enumerate(sample.tasks):
        full = encode(processor, sample, task)
        row = branches.input_ids[i, : branches.lengths[i]].tolist()
        assert prefix + row == full["input_ids"][0].tolist()
        labels = branches.labels[i, : branches.lengths[i]]
        assert tok.decode(labels[labels != IGNORE].tolist()) == task.answer + "<|im_end|>"
        assert (branches.labels[i, branches.lengths[i]:] == IGNORE).all()
    assert sorted(i for g in length_groups(branches.lengths) for i in g) == list(range(len(sample.tasks)))


def test_shared_prefix_loss_equals_the_mean_of_full_sequence_losses(trained):
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    sample = make_sample(11, MULTI)
    with torch.no_grad():
        full = [answer_loss(lm.model, encode(lm.processor, sample, task)) for task in sample.tasks]
        shared = branch_loss(lm.model, encode_branches(lm.processor, sample))
    assert len(full) >= 4 and float(torch.stack(full).std()) > 1e-3  # the tasks differ
    assert shared.item() == pytest.approx(torch.stack(full).mean().item(), abs=1e-5)


def test_shared_prefix_gradients_equal_full_sequence_gradients(trained):
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    sample = make_sample(11, MULTI)
    params = dict(lm.model.named_parameters())
    lm.model.zero_grad()
    torch.stack([answer_loss(lm.model, encode(lm.processor, sample, t)) for t in sample.tasks]).mean().backward()
    # A parameter that no loss path reaches has grad None on one side and zeros on the other
    # (e.g. a DeepStack merger feeding only the last layer at visual positions).
    want = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in params.items()}
    lm.model.zero_grad()
    branch_loss(lm.model, encode_branches(lm.processor, sample)).backward()
    got = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in params.items()}
    assert any("visual" in k and float(g.abs().max()) > 0 for k, g in got.items())
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5, rtol=1e-3), name


def test_planned_seconds_are_real_frame_times():
    frames = np.cumsum(np.r_[0.0, np.full(30, 1 / 30), np.full(40, 1 / 10)])  # 30 fps then 10 fps
    times = planned_seconds(frames, fps=2.0, max_frames=100)
    assert len(times) % 2 == 0 and set(times) <= set(frames)
    assert times[0] == 0.0 and times[-1] == frames[-1]


def test_still_samples_ask_every_qa_form_about_one_moment():
    spec = SampleSpec(frame_px=64, stills=True, world=WorldParams(min_seconds=6.0, max_seconds=10.0))
    sample = make_sample(5, spec)
    assert sample.frames.shape[0] == 2 and sample.seconds[0] == sample.seconds[1]
    np.testing.assert_array_equal(sample.frames[0], sample.frames[1])
    assert len(sample.tasks) >= 4 and {t.kind for t in sample.tasks} == {"qa"}
    assert {t.at_seconds for t in sample.tasks} == {float(sample.seconds[0])}
    only = make_sample(5, dataclasses.replace(spec, focuses=("background",)))
    assert [t.question for t in only.tasks] == [t.question for t in sample.tasks if "background" in t.question]
    with pytest.raises(ValueError, match="unknown"):
        make_sample(5, dataclasses.replace(spec, focuses=("smell",)))


def test_a_still_with_no_question_in_its_focuses_draws_another_moment():
    # One object a scene: "what colour is the <shape>" needs it on screen, which many moments
    # (before it enters, after it leaves) are not; such stills used to have no task at all.
    world = WorldParams(min_seconds=6.0, max_seconds=20.0, max_objects=1, max_present=1)
    spec = SampleSpec(frame_px=64, stills=True, focuses=("shape_colour",), world=world)
    for seed in range(40):
        sample = make_sample(seed, spec)
        assert len(sample.tasks) == 1 and "what colour is the" in sample.tasks[0].question.lower()
        snap = describe_at(sample.scene, float(sample.seconds[0]))
        assert len(snap.objects) == 1 and sample.tasks[0].answer.lower().startswith(snap.objects[0].split(" ")[0])


def test_a_tower_warm_up_must_see_the_stage_s_frames(tmp_path):
    from recipe.warmup import WarmupConfig

    with pytest.raises(ValueError, match="frame_px"):
        train(tmp_path / "a", cfg=small(1, tower_warmup=WarmupConfig(stills=8, batch=8, frame_px=128)))


def test_pair_saliency_marks_the_pairs_inside_the_true_span():
    pairs = [0.2, 1.2, 2.2, 3.2, 4.2]
    assert pair_saliency(Task("grounding", "q", "a", ((1.0, 3.3),)), pairs) == [0, 1, 1, 1, 0]
    # No pair time inside: the pair nearest to the span's middle (1.65).
    assert pair_saliency(Task("grounding", "q", "a", ((1.4, 1.9),)), pairs) == [0, 1, 0, 0, 0]
    assert pair_saliency(Task("qa", "q", "a", at_seconds=1.0), pairs) == []
    # An event that does not happen is in no pair.
    assert pair_saliency(Task("absent", "q", "It does not happen."), pairs) == [0, 0, 0, 0, 0]


def grounding_sample():
    spec = dataclasses.replace(MULTI, kinds=("grounding", "qa", "absent"), questions=6)
    sample = next(s for s in (make_sample(seed, spec) for seed in range(40, 80))
                  if 2 <= sum(t.kind == "grounding" for t in s.tasks) < len(s.tasks)
                  and any(t.kind == "absent" for t in s.tasks) and any(t.kind == "qa" for t in s.tasks))
    return sample


def test_branches_carry_each_grounding_question_s_pair_saliency(trained):
    out, _ = trained
    processor = Processor(Tokenizer.from_dir(out), ProcessorConfig(video_max_tokens_per_frame=4))
    sample = grounding_sample()
    branches = encode_branches(processor, sample)
    pairs = frame_pair_seconds(sample.seconds)
    assert branches.saliency is not None and branches.saliency.shape == (len(sample.tasks), len(pairs))
    for i, task in enumerate(sample.tasks):
        row = branches.saliency[i].tolist()
        if task.kind == "grounding":
            assert row == pair_saliency(task, pairs) and 0 < sum(row) < len(pairs)
        elif task.kind == "absent":
            assert row == [0.0] * len(pairs)
        else:
            assert row == [-1.0] * len(pairs)
        # The answer starts right after the prompt.
        asked = branches.question_lengths[i]
        assert branches.labels[i, asked - 1] == IGNORE and branches.labels[i, asked] != IGNORE


def test_pointers_mark_the_answer_tokens_of_each_time_with_its_frame_pair(trained):
    """With snapped answers every time in an answer is a printed one: the tokens a pointer
    position predicts spell exactly the times printed before the pairs pointed at."""
    out, _ = trained
    tok = Tokenizer.from_dir(out)
    processor = Processor(tok, ProcessorConfig(video_max_tokens_per_frame=4))
    sample = make_sample(3, dataclasses.replace(MULTI, kinds=("grounding", "caption", "qa"), snap_spans=True))
    branches = encode_branches(processor, sample)
    printed = [f"{t:.1f}" for t in frame_pair_seconds(sample.seconds)]
    spelled: dict[tuple[int, int], str] = {}
    for row, position, pair in branches.pointers.tolist():
        assert sample.tasks[row].kind in ("grounding", "caption")
        assert branches.labels[row, position + 1] != IGNORE  # an answer token
        spelled[row, pair] = spelled.get((row, pair), "") + tok.decode(branches.input_ids[row, position + 1 : position + 2].tolist())
    want = {(row, pair) for row, task in enumerate(sample.tasks) for pair, t in enumerate(printed)
            if task.kind in ("grounding", "caption") and t in re.findall(r"\d+\.\d", task.answer)}
    assert spelled and set(spelled) == want
    assert all(text.count(printed[pair]) >= 1 and set(text) <= set("0123456789.") for (_, pair), text in spelled.items())


def test_deciding_digits_are_those_that_still_choose_a_frame_pair(trained):
    """After the "1" of "17.3" the next digit still chooses between the pairs printed 1.x and
    10-19.x; after "17." nothing is left to choose. Under 10 s only the first digit chooses."""
    out, _ = trained
    tok = Tokenizer.from_dir(out)
    printed = [1.3 + i for i in range(25)]  # 1.3, 2.3, ..., 25.3
    ids = tok.encode("From 17.3 to 21.3 seconds, then from 1.3 to 5.4 seconds.")
    got = [(tok.decode([ids[k]]), pair, deciding) for k, pair, deciding in answer_time_tokens(tok, ids, printed)]
    assert got == [
        ("1", 16, True), ("7", 16, True), (".", 16, False), ("3", 16, False),
        ("2", 20, True), ("1", 20, True), (".", 20, False), ("3", 20, False),
        ("1", 0, True), (".", 0, True), ("3", 0, False),
        ("5", 4, True), (".", 4, False), ("4", 4, False),  # 5.4 is nearest to the pair printed 5.3
    ]
    short = [t for t in printed if t < 10]
    assert [d for *_, d in answer_time_tokens(tok, tok.encode("From 1.3 to 5.3 seconds."), short)] == [True, False, False] * 2


def test_grounding_heads_score_the_states_a_full_sequence_has(trained):
    """The added losses are the heads' cross-entropies on the states entering the last layer,
    at the question's last prompt token and each pair's visual tokens, of every grounding
    question run as one whole sequence."""
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    sample = grounding_sample()
    torch.manual_seed(0)
    head = GroundingHeads(lm.model.config.text.hidden_size)
    branches = encode_branches(lm.processor, sample)
    last = lm.model.model.language_model.layers[-1]
    scores, targets, states = [], [], []
    with torch.no_grad():
        plain = branch_loss(lm.model, branches)
        added = branch_loss(lm.model, branches, heads=head, grounding=GroundingLosses(saliency_weight=2.0)) - plain
        clock = branch_loss(lm.model, branches, heads=head, grounding=GroundingLosses(clock_weight=0.5)) - plain
        pointer = branch_loss(lm.model, branches, heads=head, grounding=GroundingLosses(pointer_weight=3.0)) - plain
        pointer_logits, pointer_targets = [], []
        for i, task in enumerate(sample.tasks):
            if task.kind not in ("grounding", "absent"):  # an absent event's target: no pair
                continue
            states.clear()
            hook = last.register_forward_pre_hook(lambda _m, args: states.append(args[0]))
            batch = encode(lm.processor, sample, task)
            batch.pop("labels")
            lm.model(**batch)
            hook.remove()
            ids = batch["input_ids"][0]
            visual = states[0][0, ids == lm.model.config.video_token_id].reshape(len(branches.saliency[i]), 4, -1)
            question_end = len(branches.prefix["input_ids"][0]) + branches.question_lengths[i] - 1
            scores.append(head.saliency(states[0][0, question_end][None], visual.mean(dim=1))[0])
            targets.append(branches.saliency[i])
            for row, position, pair in branches.pointers.tolist():
                if row == i:
                    at = len(branches.prefix["input_ids"][0]) + position
                    pointer_logits.append(head.pointer(states[0][0, at][None], visual.mean(dim=1))[0])
                    pointer_targets.append(pair)
    want = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(scores), torch.cat(targets))
    assert len(scores) >= 2 and added.item() == pytest.approx(2.0 * want.item(), rel=1e-4, abs=1e-6)
    # The clock: every visual token names the digits of the time printed before its pair.
    printed = [float(f"{t:.1f}") for t in frame_pair_seconds(sample.seconds)]
    assert branches.pair_tenths.tolist() == [round(t * 10) for t in printed]
    digits = torch.tensor([[int(c) for c in f"{t:04.1f}".replace(".", "")] for t in printed])  # "07.5" -> 0 7 5
    logits = head.clock(visual).reshape(len(printed), 4, 3, 10)
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), digits[:, None].expand(-1, 4, -1).reshape(-1))
    assert clock.item() == pytest.approx(0.5 * want.item(), rel=1e-4, abs=1e-6)
    want = torch.nn.functional.cross_entropy(torch.stack(pointer_logits), torch.tensor(pointer_targets))
    assert len(pointer_targets) >= 12 and pointer.item() == pytest.approx(3.0 * want.item(), rel=1e-4, abs=1e-6)


def test_pair_words_name_what_each_pair_shows_on_the_scene_s_own_clock(trained):
    out, _ = trained
    tok = Tokenizer.from_dir(out)
    spec = dataclasses.replace(MULTI, max_offset_seconds=30.0, offset_probability=1.0, kinds=("qa",), questions=2)
    sample = next(s for s in (make_sample(seed, spec) for seed in range(60))
                  if s.seconds[0] >= 1.0 and any(x.text for x in s.shown) and any(x.objects for x in s.shown))
    plain = make_sample(sample.seed, dataclasses.replace(spec, max_offset_seconds=0.0))
    assert sample.seconds[0] > plain.seconds[0]  # its clock was moved on; what it shows was not
    assert sample.shown == plain.shown == tuple(describe_at(sample.scene, t) for t in frame_pair_seconds(plain.seconds))
    words = pair_words(tok, sample.shown, tok.vocab_size)
    assert words.shape == (len(frame_pair_seconds(sample.seconds)), tok.vocab_size)
    for p, snap in enumerate(sample.shown):
        want = {i for obj in snap.objects for w in obj.split() for i in tok.encode(f" {w}")}
        want |= set(tok.encode(f" {snap.background}"))
        want |= set(tok.encode(f' "{snap.text}"')[1:-1]) if snap.text else set()
        assert set(torch.nonzero(words[p] == 1)[:, 0].tolist()) == want
    scored = words[0] >= 0
    for word in (" red", " hexagon", " navy", " teal"):
        assert all(scored[i] for i in tok.encode(word))
    for word in (" When", "<|im_end|>", "."):  # not identity words: never scored
        assert not any(scored[i] for i in tok.encode(word))


def test_name_loss_reads_each_pair_s_visual_tokens_through_the_input_embeddings(trained):
    """The name loss: the states entering the last layer at each pair's visual tokens, through
    the final norm and the input embeddings, max over the pair's tokens, scored against
    ``pair_words``."""
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    sample = grounding_sample()
    branches = encode_branches(lm.processor, sample)
    assert branches.words is not None
    last = lm.model.model.language_model.layers[-1]
    states = []
    with torch.no_grad():
        plain = branch_loss(lm.model, branches)
        named = branch_loss(lm.model, branches, grounding=GroundingLosses(name_weight=1.5)) - plain
        hook = last.register_forward_pre_hook(lambda _m, args: states.append(args[0]))
        batch = encode(lm.processor, sample, sample.tasks[0])
        batch.pop("labels")
        lm.model(**batch)
        hook.remove()
        ids = batch["input_ids"][0]
        visual = states[0][0, ids == lm.model.config.video_token_id].reshape(branches.words.shape[0], 4, -1)
        text = lm.model.model.language_model
        logits = (text.norm(visual) @ text.embed_tokens.weight.T).amax(dim=1)
    words = branches.words[:, : logits.shape[1]]
    scored = words >= 0
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[scored], words[scored].float())
    assert int((words == 1).sum()) >= len(words)  # every pair shows at least its background
    assert named.item() == pytest.approx(1.5 * want.item(), rel=1e-4, abs=1e-6)


def test_attend_loss_is_the_attention_mass_the_full_sequence_gives_the_pointed_pair(trained, monkeypatch):
    """The lookup loss is -log of the attention that query head 0 of the last layer, in the
    whole sequence, pays to the visual tokens of the pair each answer time names."""
    import vidlm
    import vidlm.decoder as decoder

    out, _ = trained
    lm = vidlm.load(out)
    sample = grounding_sample()
    branches = encode_branches(lm.processor, sample)
    layers = lm.model.config.text.num_hidden_layers
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = decoder.causal_attention

    def spy(q, k, v, **kw):
        seen.append((q, k))
        return real(q, k, v, **kw)

    with torch.no_grad():
        plain = branch_loss(lm.model, branches)
        added = branch_loss(lm.model, branches, grounding=GroundingLosses(attend_weight=1.5)) - plain
        first_only = branch_loss(
            lm.model, branches, grounding=GroundingLosses(attend_weight=1.5, attend_first_digits=True)
        ) - plain
        deciding_only = branch_loss(
            lm.model, branches, grounding=GroundingLosses(attend_weight=1.5, attend_deciding_digits=True)
        ) - plain
        monkeypatch.setattr(decoder, "causal_attention", spy)
        want, firsts = [], []
        pointed = {(row, position) for row, position, _ in branches.pointers.tolist()}
        for i, task in enumerate(sample.tasks):
            if task.kind != "grounding":
                continue
            seen.clear()
            batch = encode(lm.processor, sample, task)
            batch.pop("labels")
            lm.model(**batch)
            q, k = seen[layers - 1]  # the last layer's [1, H, L, Dh] and [1, KV, L, Dh]
            ids = batch["input_ids"][0]
            visual = (ids == lm.model.config.video_token_id).nonzero().flatten().reshape(len(branches.saliency[i]), -1)
            for row, position, pair in branches.pointers.tolist():
                if row == i:
                    at = len(branches.prefix["input_ids"][0]) + position
                    scores = (q[0, 0, at] @ k[0, 0, : at + 1].T) / q.shape[-1] ** 0.5
                    want.append(-torch.log(torch.softmax(scores, dim=0)[visual[pair]].sum()))
                    firsts.append((row, position - 1) not in pointed)
    assert len(want) >= 12 and added.item() == pytest.approx(1.5 * torch.stack(want).mean().item(), rel=1e-4, abs=1e-6)
    # A time's first digit: the token before it is not part of a time ("From " / " to ").
    first = torch.stack([w for w, f in zip(want, firsts, strict=True) if f])
    assert 4 <= len(first) < len(want) and first_only.item() == pytest.approx(1.5 * first.mean().item(), rel=1e-4, abs=1e-6)
    # The deciding digits, in the branches' order (grounding rows only, as ``want``).
    rows = [row for row, _, _ in branches.pointers.tolist()]
    chooses = [d for row, d in zip(rows, branches.deciding.tolist(), strict=True) if sample.tasks[row].kind == "grounding"]
    deciding = torch.stack([w for w, d in zip(want, chooses, strict=True) if d])
    assert 4 <= len(deciding) < len(want) and deciding_only.item() == pytest.approx(1.5 * deciding.mean().item(), rel=1e-4, abs=1e-6)
    with pytest.raises(ValueError, match="choose one"):
        GroundingLosses(attend_first_digits=True, attend_deciding_digits=True)


def test_a_batch_of_videos_gives_each_video_s_own_loss_and_gradients(trained):
    """Several videos in one pass (prefixes right-padded, every video's questions batched
    together) score exactly what each video scores alone: the answers and every grounding
    loss, which index the pairs and keys of their own video."""
    import vidlm

    out, _ = trained
    lm = vidlm.load(out)
    spec = dataclasses.replace(MULTI, kinds=("grounding", "caption", "qa"),
                               world=WorldParams(min_seconds=4.0, max_seconds=14.0))
    videos = [encode_branches(lm.processor, make_sample(seed, spec)) for seed in (21, 22, 23)]
    widths = [v.prefix["input_ids"].shape[1] for v in videos]
    assert len(set(widths)) == 3 and all(len(v.pointers) > 0 for v in videos)  # padding is exercised
    torch.manual_seed(0)
    head = GroundingHeads(lm.model.config.text.hidden_size)
    losses = GroundingLosses(saliency_weight=0.5, clock_weight=1.0, pointer_weight=1.0, attend_weight=2.0,
                             attend_first_digits=True)
    params = [*lm.model.named_parameters(), *head.named_parameters()]

    def grads() -> dict[str, torch.Tensor]:
        got = {k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in params}
        lm.model.zero_grad()
        head.zero_grad()
        return got

    alone = [branch_loss(lm.model, v, visual_norm_weight=0.05, heads=head, grounding=losses) for v in videos]
    torch.stack(alone).mean().backward()
    want = grads()
    together = branch_loss(lm.model, videos, visual_norm_weight=0.05, heads=head, grounding=losses)
    together.backward()
    got = grads()
    assert float(torch.stack(alone).detach().std()) > 1e-2  # the videos differ
    assert together.item() == pytest.approx(torch.stack(alone).mean().item(), rel=1e-5)
    assert any("visual" in k and float(g.abs().max()) > 0 for k, g in got.items())
    assert any("query" in k and float(g.abs().max()) > 0 for k, g in got.items())
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6, rtol=1e-3), name


def test_batching_videos_changes_the_speed_not_the_run(tmp_path):
    one = train(tmp_path / "one", cfg=small(3, batch_videos=1))
    two = train(tmp_path / "two", cfg=small(3, batch_videos=2))
    assert one == pytest.approx(two, rel=1e-4)
    with pytest.raises(ValueError, match="batch_videos=0"):
        small(1, batch_videos=0)


def test_grounding_heads_train_with_the_model_and_are_not_saved(tmp_path):
    from safetensors import safe_open

    import vidlm

    grounding = dataclasses.replace(SPEC, kinds=("grounding",), questions=3)
    plain = train(tmp_path / "plain", cfg=small(4, sample=grounding))
    losses = GroundingLosses(saliency_weight=1.0, clock_weight=1.0)
    salient = train(tmp_path / "salient", cfg=small(4, sample=grounding, grounding=losses))
    assert all(np.isfinite(salient)) and salient[0] > plain[0]  # its loss is added from the first step
    keys = [set(safe_open(str(tmp_path / run / "model.safetensors"), "pt").keys()) for run in ("plain", "salient")]
    assert keys[0] == keys[1]  # the released format, nothing more
    vidlm.load(tmp_path / "salient")


def test_a_frozen_tower_keeps_its_blocks_and_trains_its_mergers(tmp_path):
    from safetensors.torch import load_file

    base = tmp_path / "base"
    train(base, cfg=small(1))
    train(tmp_path / "frozen", init=base, cfg=small(3, freeze_tower=True))
    before, after = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("base", "frozen"))
    fixed = [k for k in before if k.startswith(("model.visual.blocks.", "model.visual.patch_embed.", "model.visual.pos_embed."))]
    merged = [k for k in before if k.startswith(("model.visual.merger.", "model.visual.deepstack_merger_list."))]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    assert merged and any(not torch.equal(before[k], after[k]) for k in merged)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.language_model."))


def test_a_rerun_schedule_keeps_finished_stages_and_retrains_changed_ones(tmp_path):
    from recipe.train import train_builtin

    out = tmp_path / "model"
    stages = [small(2), small(2, seed=1, batch_videos=2)]
    steps: list[int] = []
    first = train_builtin(out, stages=stages, progress=lambda step, total, loss: steps.append(step))
    assert steps == [1, 2, 1, 2] and len(first) == 4
    assert json.loads((out / "training.json").read_text())["config"]["batch_videos"] == 2  # the stage's own, unless told
    stage1 = out.with_name("model.stage1") / "model.safetensors"
    made = stage1.stat().st_mtime_ns
    (out / "training.json").unlink()  # the last stage was cut short
    steps.clear()
    again = train_builtin(out, stages=stages, batch_videos=2, progress=lambda step, total, loss: steps.append(step))
    assert steps == [1, 2] and stage1.stat().st_mtime_ns == made  # stage 1 kept, whatever the batching
    assert again[:2] == first[:2] and again[2:] == pytest.approx(first[2:], rel=1e-4)
    steps.clear()
    train_builtin(out, stages=[dataclasses.replace(small(2), lr=1e-3), small(2, seed=1)], progress=lambda step, total, loss: steps.append(step))
    assert steps == [1, 2, 1, 2]  # a changed stage 1 is retrained, and so is what follows it


def test_a_run_recorded_before_a_config_field_existed_counts_as_its_default(tmp_path):
    from recipe.grow import Growth
    from recipe.train import finished_losses

    losses = train(tmp_path / "old", cfg=small(1))
    record = json.loads((tmp_path / "old" / "training.json").read_text())
    del record["config"]["grow"]  # as a run written before these fields were added
    del record["config"]["sample"]["world"]["text_gap_seconds"]
    (tmp_path / "old" / "training.json").write_text(json.dumps(record))
    assert finished_losses(tmp_path / "old", small(1)) == losses
    assert finished_losses(tmp_path / "old", small(1, grow=Growth(kv_heads=4))) is None
    busy = dataclasses.replace(SPEC, world=dataclasses.replace(SPEC.world, text_gap_seconds=1.0))
    assert finished_losses(tmp_path / "old", small(1, sample=busy)) is None


def test_curriculum_defaults_start_the_builtin_schedule_and_keywords_reach_the_video_stages():
    from recipe.train import builtin_stages, curriculum_stages
    from recipe.warmup import WarmupConfig

    start = curriculum_stages()
    assert [c.steps for c in start] == [150, 200, 700, 500]
    assert all(c.sample.frame_px == 64 and c.tower_warmup is None and not c.sample.snap_spans for c in start)
    assert all(g.saliency_weight == g.clock_weight == g.pointer_weight == g.attend_weight == 0
               and not g.attend_first_digits and not g.attend_deciding_digits for g in (c.grounding for c in start))
    assert builtin_stages()[:4] == start
    motion = WarmupConfig(stills=64, frame_px=128, moving=0.7)
    losses = GroundingLosses(saliency_weight=0.5, clock_weight=1.0, pointer_weight=2.0, attend_weight=3.0,
                             attend_first_digits=True)
    tried = curriculum_stages(frame_px=128, motion_warmup=motion, grounding=losses)
    assert [c.tower_warmup for c in tried] == [None, None, motion, None]
    weights = [(g.saliency_weight, g.clock_weight, g.pointer_weight, g.attend_weight, g.attend_first_digits)
               for g in (c.grounding for c in tried)]
    assert weights == [(0, 0, 0, 0, False)] * 2 + [(0.5, 1.0, 2.0, 3.0, True)] * 2


def test_builtin_schedule_moves_to_128_px_with_a_frozen_warm_tower_then_grounds_then_mixes():
    from recipe.train import builtin_stages

    later = builtin_stages()[4:]
    assert [c.steps for c in later] == [150, 1200, 1200, 1200, 1200, 1200, 3600, 500, 800, 1800, 3000, 1200]
    assert len({c.seed for c in builtin_stages()}) == 16 - 1  # one seed a stage, but both stills stages (64 and 128 px) use seed 1
    assert all(c.sample.frame_px == 128 and c.freeze_tower for c in later)
    warm = later[0].tower_warmup
    assert warm is not None and warm.frame_px == 128 and warm.background and warm.moving > 0
    assert later[0].sample.stills and all(c.tower_warmup is None and c.sample.snap_spans for c in later[1:])
    digits = [(c.grounding.attend_first_digits, c.grounding.attend_deciding_digits) for c in later[1:]]
    assert digits == [(True, False)] * 4 + [(False, True)] * 7
    assert [set(c.sample.kinds) == {"grounding"} for c in later[1:]] == [True] * 6 + [False] * 5
    assert all({"qa", "caption"} <= set(c.sample.kinds) for c in later[-5:])
    assert [c.sample.kinds.count("qa") for c in later[-5:]] == [2, 2, 4, 3, 3]  # QA weighted up last
    # Stage 15: long videos only, the evaluation world's other settings; stage 16: the same
    # mix back on the whole evaluation world, at a lower learning rate.
    evaluation_world, long_world, last = later[-3].sample.world, later[-2].sample.world, later[-1]
    assert (long_world.min_seconds, long_world.max_seconds) == (24.0, evaluation_world.max_seconds)
    assert dataclasses.replace(long_world, min_seconds=evaluation_world.min_seconds) == evaluation_world
    assert last.sample == dataclasses.replace(later[-2].sample, world=evaluation_world)
    assert last.lr < later[-2].lr
