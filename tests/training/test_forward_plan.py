"""The forward layout is decided once, by one table of rules (training.forward_plan), for every case."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from rpo_tutorial.data.collate import PreferenceCollator
from rpo_tutorial.models.loading import load_tokenizer, tiny_model
from rpo_tutorial.training.config import get_preset
from rpo_tutorial.training.forward_plan import ForwardPlan, choose_forward_plan
from rpo_tutorial.training.run import build_trainer
from tests.training.test_trainer import make_rows

EXAMPLES = [{"chosen_input_ids": [1] * 7, "rejected_input_ids": [1] * 11}, {"chosen_input_ids": [1] * 5,
                                                                            "rejected_input_ids": [1] * 9}]


def arguments(**changes) -> SimpleNamespace:
    """The TrainingArguments fields the rules read (a plain run: one process, float32, no checkpointing)."""
    return SimpleNamespace(**{"bf16": False, "fp16": False, "fsdp": [], "fsdp_plugin_args": None, "deepspeed": None,
                              "activation_checkpointing": False, "gradient_checkpointing": False, **changes})


def model(model_type: str = "llama", attention: str = "sdpa", checkpointing: bool = False):
    tiny = tiny_model(64, hidden_size=16, num_layers=1)
    tiny.config.model_type = model_type
    tiny.config._attn_implementation = attention
    if checkpointing:
        (getattr(tiny, "activation_checkpointing_enable", None) or tiny.gradient_checkpointing_enable)()
    return tiny


# (config changes, argument changes, model, expected share_prompts, expected pad length, words in the reason)
CASES = {
    "paired rpo, llama, sdpa": ({}, {}, {}, True, None, "shared prompts"),
    "eager attention": ({}, {}, {"attention": "eager"}, True, None, "shared prompts"),
    "a precomputed reference in float32": ({"reference": "precomputed"}, {}, {}, True, None, "shared prompts"),
    "a precomputed reference under bf16": ({"reference": "precomputed"}, {"bf16": True}, {}, False, 11,
                                           "padded to 11 tokens"),
    "a precomputed reference under fp16": ({"reference": "precomputed"}, {"fp16": True}, {}, False, 11,
                                           "mixed precision"),
    "a live reference under bf16": ({}, {"bf16": True}, {}, True, None, "shared prompts"),
    "sft": ({"loss": "sft"}, {}, {}, False, None, "SFT"),
    "unpaired rpo": ({"paired": False}, {}, {}, False, None, "unpaired"),
    "kto": ({"loss": "kto"}, {}, {}, False, None, "unpaired"),
    "share_prompts off": ({"share_prompts": False}, {}, {}, False, None, "share_prompts=False"),
    "fsdp": ({}, {"fsdp": ["full_shard"], "fsdp_plugin_args": {}}, {}, False, None, "fsdp engine"),
    "deepspeed": ({}, {"deepspeed": "ds.json"}, {}, False, None, "deepspeed engine"),
    "checkpointing asked for": ({}, {"activation_checkpointing": True}, {}, False, None, "checkpointing"),
    "checkpointing (transformers 4 name)": ({}, {"gradient_checkpointing": True}, {}, False, None, "checkpointing"),
    "checkpointing on in the model": ({}, {}, {"checkpointing": True}, False, None, "checkpointing"),
    "an untested model type": ({}, {}, {"model_type": "phi3"}, False, None, "model_type 'phi3'"),
    "logits that are not a plain head": ({}, {}, {"model_type": "gemma2"}, False, None, "plain linear head"),
    "flash attention": ({}, {}, {"attention": "flash_attention_2"}, False, None, "attention implementation"),
}


@pytest.mark.parametrize("case", CASES)
def test_each_rule_of_the_table_decides_its_case(case):
    config_changes, argument_changes, model_options, share, pad, words = CASES[case]
    config = get_preset("smoke", **config_changes)
    plan = choose_forward_plan(config, arguments(**argument_changes), [model(**model_options), None], EXAMPLES)
    assert (plan.share_prompts, plan.pad_to_length) == (share, pad)
    assert words in plan.reason


def test_the_reference_model_can_veto_sharing_too():
    config = get_preset("smoke")
    plan = choose_forward_plan(config, arguments(), [model(), model(model_type="phi3")])
    assert not plan.share_prompts and "phi3" in plan.reason


def test_without_examples_a_precomputed_bf16_run_keeps_one_forward_without_a_fixed_length():
    config = get_preset("smoke", reference="precomputed")
    assert choose_forward_plan(config, arguments(bf16=True), [model()]) == ForwardPlan(
        False, None, "a precomputed reference under mixed precision: one forward on all rows, every batch padded "
                     "to None tokens, as in the reference pass")


def test_real_training_arguments_name_the_engine_and_checkpointing(monkeypatch):
    config = get_preset("smoke")
    assert choose_forward_plan(config, config.to_training_arguments(), [model()]).share_prompts
    checkpointing = config.replace(gradient_checkpointing=True).to_training_arguments()
    assert "checkpointing" in choose_forward_plan(config, checkpointing, [model()]).reason
    plain = config.to_training_arguments()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what a launcher's DeepSpeed config exports
    assert "deepspeed" in choose_forward_plan(config, plain, [model()]).reason


@pytest.mark.parametrize("bf16, reference", [(True, "precomputed"), (False, "precomputed"), (False, "model")])
def test_build_trainer_hands_one_plan_to_the_collator_and_the_trainer(tmp_path, bf16, reference):
    tokenizer = load_tokenizer()
    config = get_preset("smoke", bf16=bf16, reference=reference, output_dir=str(tmp_path), max_length=48,
                        max_prompt_length=24)
    trainer, _ = build_trainer(config, rows=make_rows(6), policy=tiny_model(len(tokenizer), hidden_size=16,
                                                                             num_layers=1), tokenizer=tokenizer)
    plan = trainer.forward_plan
    assert isinstance(trainer.data_collator, PreferenceCollator)
    assert trainer.data_collator.pad_to_length == plan.pad_to_length
    longest = max(len(e[key]) for e in trainer.train_dataset for key in ("chosen_input_ids", "rejected_input_ids"))
    assert plan == ForwardPlan(not bf16, longest if bf16 else None, plan.reason)
    if reference == "precomputed":  # the trainer ran the reference itself: the examples carry it, no model is kept
        assert trainer.reference_model is None
        assert all("reference_chosen_logps" in example for example in trainer.train_dataset)


def test_build_trainer_reuses_examples_that_carry_reference_logps(tmp_path, monkeypatch):
    """The demo's route: one reference pass, a second method trains on the first trainer's examples."""
    from rpo_tutorial.training import trainer as trainer_module

    tokenizer = load_tokenizer()
    config = get_preset("smoke", reference="precomputed", output_dir=str(tmp_path), max_length=48,
                        max_prompt_length=24)
    policy = tiny_model(len(tokenizer), hidden_size=16, num_layers=1)
    first, report = build_trainer(config, rows=make_rows(6), policy=policy, tokenizer=tokenizer)
    passes = []
    original = trainer_module.precompute_reference
    monkeypatch.setattr(trainer_module, "precompute_reference", lambda *a, **k: passes.append(1) or original(*a, **k))
    second, none = build_trainer(config.replace(loss="dpo"), policy=policy, tokenizer=tokenizer,
                                 examples=first.train_dataset)
    assert report is not None and none is None and passes == []  # no second reference pass
    assert second.train_dataset == first.train_dataset and second.reference_model is None
    with_eval, _ = build_trainer(config, policy=policy, tokenizer=tokenizer, examples=first.train_dataset,
                                 eval_rows=make_rows(2, seed=1))  # held-out rows lack them: one pass over both
    assert passes == [1] and all("reference_chosen_logps" in example for example in with_eval.eval_dataset)
    with pytest.raises(ValueError, match="rows or tokenized examples"):
        build_trainer(config, rows=make_rows(2), policy=policy, tokenizer=tokenizer, examples=first.train_dataset)
