"""Strategies on Trainer subclasses: `Seq2SeqTrainer` (tiny T5, gradual unfreezing over encoder and decoder blocks)
and TRL's `SFTTrainer` (tiny Llama, LLRD + LP-FT by epochs), through `with_transfer`.

Imported by tests/test_subclasses.py for the in-process checks, and run as a script for SIGKILL + resume:

    python subclass_train.py --trainer seq2seq --output-dir OUT --result RESULT [--kill-after-step 4 | --resume]

RESULT.safetensors gets the final weights, RESULT.json the logged losses and learning rates.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import transformers as T  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tiny import KillAfterSave  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from hf_transfer_meta import TransferArguments, with_transfer  # noqa: E402

torch.set_num_threads(1)

VOCAB = 50
NUM_EXAMPLES = 32
BATCH = 4  # 8 steps per epoch

# Depths of the tiny T5: 0 shared embeddings, 1-2 encoder blocks, 3-4 decoder blocks, 5 lm_head (untied).
SEQ2SEQ_STRATEGY = dict(gradual_unfreezing=True, unfreeze_every=2, unfreeze_unit="step")
# Depths of the tiny Llama: 0 embeddings, 1-2 decoder layers, 3 lm_head (untied).
SFT_STRATEGY = dict(layer_lr_decay=0.5, lp_mode="epochs", lp_epochs=1.0, lp_learning_rate=5e-3)


def tiny_t5(seed: int = 0, dropout: float = 0.0) -> T.T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T.T5Config(
        vocab_size=VOCAB, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
        dropout_rate=dropout, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    )  # fmt: skip
    return T.T5ForConditionalGeneration(cfg)


def seq2seq_data(n: int = NUM_EXAMPLES, seed: int = 0) -> Dataset:
    """Copy the source reversed: a task a tiny T5 can start to learn."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, 8), generator=g)
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": ids.flip(1).tolist()}
    )


def tiny_llama(seed: int = 0, dropout: float = 0.0) -> T.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, attention_dropout=dropout,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg)


def tiny_tokenizer() -> T.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = Whitespace()
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def sft_data(n: int = NUM_EXAMPLES, seed: int = 0) -> Dataset:
    """Already tokenized sequences (SFTTrainer then skips its own tokenization) of a counting pattern."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(3, VOCAB - 12, (n,), generator=g)
    return Dataset.from_dict({"input_ids": [list(range(s, s + 10)) + [2] for s in starts.tolist()]})


def seq2seq_trainer(output_dir: str, callbacks=(), seed: int = 0, dropout: float = 0.0, **strategy):
    args = T.Seq2SeqTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=BATCH, num_train_epochs=2, learning_rate=1e-3,
        weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=seed, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    cls = with_transfer(T.Seq2SeqTrainer)
    model = tiny_t5(seed, dropout)
    return cls(
        model=model, args=args, train_dataset=seq2seq_data(), callbacks=list(callbacks),
        transfer_args=TransferArguments(**(strategy or SEQ2SEQ_STRATEGY)),
        data_collator=T.default_data_collator,
    )  # fmt: skip


def sft_trainer(output_dir: str, callbacks=(), seed: int = 0, dropout: float = 0.0, **strategy):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=output_dir, per_device_train_batch_size=BATCH, num_train_epochs=2, learning_rate=1e-3,
        weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=0, save_strategy="steps", save_steps=2,
        logging_steps=1, report_to="none", use_cpu=True, seed=seed, disable_tqdm=True, dataloader_num_workers=0,
        bf16=False, max_length=16, packing=False,
    )  # fmt: skip
    cls = with_transfer(SFTTrainer)
    return cls(
        model=tiny_llama(seed, dropout), args=args, train_dataset=sft_data(), processing_class=tiny_tokenizer(),
        callbacks=list(callbacks), transfer_args=TransferArguments(**(strategy or SFT_STRATEGY)),
    )  # fmt: skip


BUILDERS = {"seq2seq": (seq2seq_trainer, tiny_t5), "sft": (sft_trainer, tiny_llama)}


class LRLog(TrainerCallback):
    """Each depth's LR as used by each optimizer step (keys: the depth, as a string)."""

    def __init__(self):
        self.lrs: list[dict[str, float]] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        lrs: dict[str, float] = {}
        for g in optimizer.param_groups:
            lrs.setdefault(str(g["depth"]), g["lr"])
        self.lrs.append(lrs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trainer", choices=sorted(BUILDERS), required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--kill-after-step", type=int)
    ap.add_argument("--resume", action="store_true")
    opts = ap.parse_args()
    build, _ = BUILDERS[opts.trainer]
    lr_log = LRLog()
    callbacks = [lr_log] + ([KillAfterSave(opts.kill_after_step)] if opts.kill_after_step else [])
    trainer = build(opts.output_dir, callbacks=callbacks, dropout=0.1)
    trainer.train(resume_from_checkpoint=True if opts.resume else None)
    save_file(
        {n: p.detach().contiguous().clone() for n, p in trainer.model.named_parameters()}, opts.result + ".safetensors"
    )
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    with open(opts.result + ".json", "w") as f:
        json.dump({"global_step": trainer.state.global_step, "losses": losses, "lrs": lr_log.lrs}, f)


if __name__ == "__main__":
    main()
