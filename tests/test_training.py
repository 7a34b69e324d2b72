"""PL at scale, the pure parts: batch layout over processes, resume state, param groups, presets, plan."""

from __future__ import annotations

import pytest
import torch

from mpa.config import ConfigError, TrainConfig, parse_config
from mpa.training.batches import BatchLayoutError, batch_layout, micro_batches, sample_order
from mpa.training.distributed import init_distributed


def test_batch_layout_keeps_the_global_batch():
    lay = batch_layout(16, 2, 4)
    assert (lay.per_process, lay.micro_batch_size, lay.accumulation) == (8, 4, 2)
    assert lay.micro_batch_size * lay.accumulation * lay.world_size == 16
    # no micro-batch size: one forward pass per process and step
    assert batch_layout(6, 3, None).accumulation == 1
    # a micro-batch larger than a process's share is capped to it
    assert batch_layout(4, 2, 16).micro_batch_size == 2


def test_batch_layout_errors_name_the_fix():
    with pytest.raises(BatchLayoutError, match="batch_size 6 cannot be split evenly over 4 processes"):
        batch_layout(6, 4, None)
    with pytest.raises(BatchLayoutError, match=r"micro_batch_size 3 does not divide the 8 samples .* \[1, 2, 4, 8\]"):
        batch_layout(16, 2, 3)


@pytest.mark.parametrize("world,micro", [(1, 4), (1, 1), (2, 2), (2, 1), (4, 1)])
def test_processes_together_see_exactly_the_global_batch(world, micro):
    order = sample_order(10, steps=5, batch_size=4, seed=3)
    lay = batch_layout(4, world, micro)
    for step in range(5):
        got = [i for r in range(world) for mb in micro_batches(order, step, lay, r) for i in mb]
        assert got == order[step * 4 : (step + 1) * 4]
        assert all(len(mb) == lay.micro_batch_size for r in range(world) for mb in micro_batches(order, step, lay, r))


def test_sample_order_is_seeded_and_reshuffles_each_pass():
    a, b = sample_order(5, 4, 3, seed=1), sample_order(5, 4, 3, seed=1)
    assert a == b and len(a) == 12
    assert sorted(a[:5]) == list(range(5)) and sorted(a[5:10]) == list(range(5))
    assert sample_order(5, 4, 3, seed=2) != a


def test_lora_with_fsdp_is_refused():
    with pytest.raises(ValueError, match="LoRA .* use strategy ddp"):
        TrainConfig(lora=True, strategy="fsdp")


def test_train_processes_override_reaches_the_config(tiny_config):
    tiny_config["train"]["processes"] = "2"
    assert parse_config(tiny_config).train.processes == 2
    tiny_config["train"]["lr_schedule"] = "exponential"
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        parse_config(tiny_config)


def test_resume_state_round_trips_and_refuses_other_settings(tmp_path):
    from transformers import get_scheduler

    from mpa.training import resume

    ctx = init_distributed("cpu")

    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        return model, opt, get_scheduler("cosine", opt, num_warmup_steps=1, num_training_steps=10)

    model, opt, sched = make()
    for _ in range(3):
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    resume.save(tmp_path / "resume", 3, model, opt, sched, [1.0, 0.5, 0.25], "fp-a", ctx)
    resume.save(tmp_path / "resume", 4, model, opt, sched, [1.0, 0.5, 0.25, 0.2], "fp-a", ctx)
    assert [p.name for p in (tmp_path / "resume").iterdir()] == ["step-000004"]  # older save dropped
    fresh, fresh_opt, fresh_sched = make()
    point = resume.load(tmp_path / "resume", fresh, fresh_opt, fresh_sched, "fp-a", ctx)
    assert point.step == 4 and point.losses[-1] == 0.2
    for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    assert fresh_sched.get_last_lr() == sched.get_last_lr()
    state_a, state_b = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(state_a[k]["exp_avg_sq"], state_b[k]["exp_avg_sq"]) for k in state_a)
    with pytest.raises(resume.ResumeMismatch, match="other samples or with other train settings"):
        resume.load(tmp_path / "resume", *make(), "fp-b", ctx)


def test_fingerprint_ignores_how_many_processes(tmp_path):
    from mpa.training.resume import fingerprint

    samples = tmp_path / "s.jsonl"
    samples.write_text('{"image": "a.png", "question": "q", "answer": "a"}\n')
    base = TrainConfig(batch_size=4).model_dump(mode="json")
    more = TrainConfig(batch_size=4, processes=4, save_every_steps=3).model_dump(mode="json")
    other = TrainConfig(batch_size=8).model_dump(mode="json")
    student = {"model": "m"}
    assert fingerprint(samples, base, student) == fingerprint(samples, more, student)
    assert fingerprint(samples, base, student) != fingerprint(samples, other, student)


def test_vision_learning_rate_groups_the_vision_tower(tiny_ws):
    from mpa.config import ModelConfig
    from mpa.stages.level import is_vision_param, param_groups
    from mpa.vlm.hf import load_model

    model = load_model(ModelConfig(model=str(tiny_ws["student"])), device=torch.device("cpu"))
    groups = param_groups(model, 1e-5, 3e-5)
    assert [g["lr"] for g in groups] == [1e-5, 3e-5]
    vision_names = {n for n, _ in model.named_parameters() if is_vision_param(n)}
    assert vision_names and all(".visual." in f".{n}" for n in vision_names)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    text_only = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="no trainable vision-tower parameters"):
        param_groups(text_only, 1e-5, 3e-5)


def test_internvl2_4b_trains_with_batch_6():
    from mpa.vlm.adapters import preset_for_config

    remote_4b = {"model_type": "internvl_chat", "template": "phi3-chat", "llm_config": {"model_type": "phi3"}}
    remote_2b = {"model_type": "internvl_chat", "template": "internlm2-chat"}
    native_4b = {"model_type": "internvl", "text_config": {"model_type": "phi3"}}
    assert (preset_for_config(remote_4b).batch_size, preset_for_config(remote_4b).learning_rate) == (6, 4e-5)
    assert preset_for_config(native_4b).batch_size == 6
    assert preset_for_config(remote_2b).batch_size == 16
    assert preset_for_config({"model_type": "qwen2_vl"}).learning_rate == 1e-5


def test_answer_loss_is_hf_token_mean_with_and_without_answer_position_logits(tiny_ws):
    from PIL import Image

    from mpa.config import ModelConfig
    from mpa.stages.level import answer_loss_sum, answer_tokens
    from mpa.vlm.hf import encode_for_training, load_model, load_processor

    cfg = ModelConfig(model=str(tiny_ws["student"]))
    proc, model = load_processor(cfg), load_model(cfg, device=torch.device("cpu"))
    img = Image.new("RGB", (56, 56), (200, 30, 30))
    batch = encode_for_training(proc, [img, img, img], ["What color?", "A much longer question here?", "Q"],
                                ["red", "three words answer", "x"])
    hf = model(**batch).loss.item()
    n = answer_tokens(batch["labels"])
    for keep in (True, False):
        assert answer_loss_sum(model, batch, keep).item() / n == pytest.approx(hf, rel=1e-5)


def test_trainjob_backend_is_not_trained_here_silently(tiny_config, tmp_path):
    from mpa.stages.level import level_with_config

    tiny_config["train"]["backend"] = "trainjob"
    with pytest.raises(ValueError, match="train.backend trainjob: PL as a Kubeflow TrainJob runs from `mpa level`"):
        level_with_config(parse_config(tiny_config), tmp_path / "level", samples_path=tmp_path / "s.jsonl")
