"""PL on the Trainer, the parts that need no training run: the collator's labels, batch layout, settings
mapping, resume checks, param groups, presets, accelerate configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mpa.config import ConfigError, TrainConfig, parse_config
from mpa.training.batches import BatchLayoutError, batch_layout

REPO = Path(__file__).resolve().parents[1]


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


def test_lora_with_fsdp_is_refused():
    with pytest.raises(ValueError, match="LoRA .* use strategy ddp"):
        TrainConfig(lora=True, strategy="fsdp")


def test_train_processes_override_reaches_the_config(tiny_config):
    tiny_config["train"]["processes"] = "2"
    assert parse_config(tiny_config).train.processes == 2
    tiny_config["train"]["lr_schedule"] = "exponential"
    with pytest.raises(ConfigError, match="train.lr_schedule"):
        parse_config(tiny_config)


def test_resume_point_refuses_other_settings_drops_cut_saves_and_sharded_pickles(tmp_path):
    from mpa.training import resume

    rdir = tmp_path / "resume"
    assert resume.resume_point(rdir, "fp-a") is None  # fresh: the fingerprint is recorded
    for step in (2, 4):
        (rdir / f"checkpoint-{step}").mkdir()
    (rdir / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    (rdir / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')
    # checkpoint-4's trainer_state.json (written last) is torn: a kill cut that save; it goes, 2 is used
    assert resume.resume_point(rdir, "fp-a") == rdir / "checkpoint-2"
    assert not (rdir / "checkpoint-4").exists()
    with pytest.raises(resume.ResumeMismatch, match="other samples or with other train settings"):
        resume.resume_point(rdir, "fp-b")
    (rdir / "checkpoint-2" / "pytorch_model_fsdp_0").mkdir()
    (rdir / "checkpoint-2" / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"pickle")
    with pytest.raises(resume.UnsafeCheckpoint, match=r"\.metadata: resuming would unpickle it"):
        resume.resume_point(rdir, "fp-a")


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
    from mpa.training.trainer import is_vision_param, param_groups
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


def test_collator_labels_are_todays_for_every_family(tmp_path):
    """One batch per family through the dataset and collator PL trains with, against the labels captured
    from the engine before PL moved to the Trainer (tests/fixtures/pl_labels_before_trainer.json)."""
    from PIL import Image

    from mpa.devtools.tinymodels import DEFAULT_CORPUS, TINY_FAMILIES, build_tiny, train_bpe_tokenizer
    from mpa.tasks import get_task
    from mpa.training.data import AnswerOnlyCollator, ParityDataset
    from mpa.vlm.hf import load_processor

    before = json.loads((REPO / "tests" / "fixtures" / "pl_labels_before_trainer.json").read_text())
    corpus = [*DEFAULT_CORPUS, "red green blue yellow", "What color is the image?"]
    images = []
    shapes = [((200, 20, 20), (56, 40)), ((20, 20, 200), (40, 56)), ((20, 200, 20), (28, 28))]
    for i, (color, size) in enumerate(shapes):
        images.append(tmp_path / f"img{i}.png")
        Image.new("RGB", size, color).save(images[-1])
    rows = [{"image": str(images[0]), "question": "What color?", "answer": "red"},
            {"image": str(images[1]), "question": "A longer question about the image?", "answer": "dark blue"},
            {"image": str(images[2]), "question": "Q", "answer": "x."}]
    dirs = {f: (build_tiny(f, tmp_path / f, corpus=corpus), False) for f in TINY_FAMILIES}
    from transformers import Qwen2TokenizerFast

    remote = tmp_path / "internvl_chat"  # InternVL2's processor needs only the tokenizer and config.json
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    tok = Qwen2TokenizerFast(tokenizer_object=train_bpe_tokenizer(DEFAULT_CORPUS, 400, special),
                             eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, bos_token=None)
    tok.save_pretrained(remote)
    (remote / "config.json").write_text(json.dumps({
        "model_type": "internvl_chat", "architectures": ["StubInternVLChatModel"], "template": "internlm2-chat",
        "downsample_ratio": 0.5, "max_dynamic_patch": 4, "use_thumbnail": True, "force_image_size": 28,
        "vision_config": {"image_size": 28, "patch_size": 14}, "vocab_size": len(tok)}))
    dirs["internvl_chat"] = (remote, True)
    assert set(dirs) == set(before)
    dataset = ParityDataset(rows, get_task("textvqa"))
    for family, (path, remote_code) in dirs.items():
        from mpa.config import ModelConfig

        processor = load_processor(ModelConfig(model=str(path), device="cpu", trust_remote_code=remote_code))
        batch = AnswerOnlyCollator(processor)([dataset[i] for i in range(len(rows))])
        assert sorted(batch) == before[family]["keys"], family
        for key in ("input_ids", "labels", "attention_mask"):
            assert batch[key].tolist() == before[family][key], (family, key)


def test_train_settings_map_onto_training_arguments(tmp_path):
    from mpa.training.trainer import TrainerArgsError, training_arguments

    cfg = TrainConfig(lr_schedule="cosine", warmup_ratio=0.25, adam_betas=(0.9, 0.98), weight_decay=0.1,
                      save_every_steps=3, dataloader_workers=2, trainer_args={"optim": "adamw_torch", "tf32": None})
    args = training_arguments(cfg, tmp_path, micro=2, accumulation=4, lr=1e-5, steps=10, bf16=False,
                              checkpointing=True)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.max_steps) == (2, 4, 10)
    assert (args.lr_scheduler_type.value, args.get_warmup_steps(10), args.adam_beta1, args.adam_beta2) == (
        "cosine", 2, 0.9, 0.98)
    assert (args.save_steps, args.dataloader_num_workers, args.optim.value, args.report_to) == (
        3, 2, "adamw_torch", [])
    assert args.output_dir == str(tmp_path / "resume") and args.gradient_checkpointing
    with pytest.raises(TrainerArgsError, match="train.trainer_args.learning_rate is set by train.learning_rate"):
        training_arguments(TrainConfig(trainer_args={"learning_rate": 1.0}), tmp_path, micro=1, accumulation=1,
                           lr=1e-5, steps=1, bf16=False, checkpointing=False)
    with pytest.raises(TrainerArgsError, match="train.trainer_args.lerning_rate is not a transformers TrainingArg"):
        training_arguments(TrainConfig(trainer_args={"lerning_rate": 1.0}), tmp_path, micro=1, accumulation=1,
                           lr=1e-5, steps=1, bf16=False, checkpointing=False)


def test_optimizer_gets_the_vision_lr_group_and_adam_betas(tiny_ws, tmp_path):
    from mpa.config import ModelConfig
    from mpa.training.trainer import PLTrainer, training_arguments
    from mpa.vlm.hf import load_model

    model = load_model(ModelConfig(model=str(tiny_ws["student"])), device=torch.device("cpu"))
    args = training_arguments(TrainConfig(adam_betas=(0.9, 0.98)), tmp_path, micro=1, accumulation=1, lr=1e-5,
                              steps=1, bf16=False, checkpointing=False)
    opt = PLTrainer(model=model, args=args, vision_lr=2e-6).create_optimizer()
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 2e-6]
    assert {g["betas"] for g in opt.param_groups} == {(0.9, 0.98)}


def test_fsdp_on_the_cpu_is_refused_not_silently_unsharded():
    from mpa.training.batches import check_strategy

    with pytest.raises(ValueError, match="train.strategy fsdp needs GPUs"):
        check_strategy("fsdp", on_gpu=False)
    check_strategy("fsdp", on_gpu=True)
    check_strategy("ddp", on_gpu=False)


@pytest.mark.parametrize("name,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed_zero3", "DEEPSPEED")])
def test_shipped_accelerate_configs_parse_and_launch(name, kind, tmp_path):
    """GPU configs, checked statically: accelerate's own loader and launch parser take them."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    from mpa.training.launch import launch_command

    path = REPO / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert (str(getattr(cfg.distributed_type, "value", cfg.distributed_type)),
            str(getattr(cfg.mixed_precision, "value", cfg.mixed_precision))) == (kind, "bf16")
    if kind == "FSDP":  # full state dicts: a resume never unpickles DCP metadata
        assert cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT" and cfg.fsdp_config["fsdp_version"] == 2
    if kind == "DEEPSPEED":
        assert cfg.deepspeed_config["zero_stage"] == 3
    cmd = launch_command(4, tmp_path / "spec.json", str(path))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(cmd[3:])
    assert (args.config_file, args.num_processes, args.module, args.training_script) == (
        str(path), 4, True, "mpa.stages.level")
