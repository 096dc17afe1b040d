// Validation of TrainConfig: every out-of-range field is reported with its name and value.
#include "config.h"

#include <cmath>

#include <c10/util/Exception.h>

#include "optim.h"
#include "schedule.h"

namespace finetune {

std::vector<std::string> config_field_names() {
  return {
#define FINETUNE_FIELD_NAME(type, name, default_value) #name,
      FINETUNE_CONFIG_FIELDS(FINETUNE_FIELD_NAME)
#undef FINETUNE_FIELD_NAME
  };
}

void validate(const TrainConfig& c) {
  TORCH_CHECK_VALUE(c.task == "classification" || c.task == "regression" || c.task == "ranking",
                    "task must be one of ['classification', 'regression', 'ranking'], got '", c.task, "'");
  // epochs=0 would return the model untrained, its history and metrics empty: no run asks for that.
  TORCH_CHECK_VALUE(c.epochs >= 1, "epochs must be >= 1, got ", c.epochs);
  TORCH_CHECK_VALUE(c.seed >= 0, "seed must be >= 0, got ", c.seed);  // numpy's generators take no negative seed
  TORCH_CHECK_VALUE(c.batch_size >= 0, "batch_size must be a positive integer or 'full', got ", c.batch_size);
  TORCH_CHECK_VALUE(c.eval_batch_size >= 1, "eval_batch_size must be >= 1, got ", c.eval_batch_size);
  check_optimizer_name(c.optimizer);
  TORCH_CHECK_VALUE(c.lr > 0.0 && std::isfinite(c.lr), "lr must be a finite number > 0, got ", c.lr);
  TORCH_CHECK_VALUE(c.momentum >= 0.0 && c.momentum < 1.0, "momentum must be in [0, 1), got ", c.momentum);
  TORCH_CHECK_VALUE(!c.nesterov || c.momentum > 0.0, "nesterov=True needs momentum > 0, got momentum=", c.momentum);
  TORCH_CHECK_VALUE(c.weight_decay >= 0.0 && std::isfinite(c.weight_decay),
                    "weight_decay must be a finite number >= 0, got ", c.weight_decay);
  TORCH_CHECK_VALUE(c.beta1 >= 0.0 && c.beta1 < 1.0, "beta1 must be in [0, 1), got ", c.beta1);
  TORCH_CHECK_VALUE(c.beta2 >= 0.0 && c.beta2 < 1.0, "beta2 must be in [0, 1), got ", c.beta2);
  TORCH_CHECK_VALUE(c.eps > 0.0, "eps must be > 0, got ", c.eps);
  TORCH_CHECK_VALUE(c.sample_fraction > 0.0 && c.sample_fraction <= 1.0,
                    "sample_fraction must be in (0, 1], got ", c.sample_fraction);
  TORCH_CHECK_VALUE(c.sample_size >= 0, "sample_size must be a positive integer, got ", c.sample_size);
  TORCH_CHECK_VALUE(c.topk >= 1, "topk must be >= 1, got ", c.topk);
  TORCH_CHECK_VALUE(c.alpha >= 0.0 && c.alpha < 1.0, "alpha must be in [0, 1), got ", c.alpha);
  check_schedule(c);
  for (const auto& [epoch, patterns] : c.unfreeze_at) {
    TORCH_CHECK_VALUE(epoch >= 0, "unfreeze_at epochs must be >= 0, got ", epoch);
  }
  for (const auto& [pattern, multiplier] : c.lr_groups) {
    TORCH_CHECK_VALUE(multiplier >= 0.0 && std::isfinite(multiplier), "lr_groups['", pattern,
                      "'] must be a finite multiplier >= 0, got ", multiplier);
  }
  TORCH_CHECK_VALUE(c.layer_decay > 0.0 && c.layer_decay <= 1.0, "layer_decay must be in (0, 1], got ", c.layer_decay);
  TORCH_CHECK_VALUE(c.clip_grad_norm >= 0.0 && std::isfinite(c.clip_grad_norm),
                    "clip_grad_norm must be >= 0 (0 = off), got ", c.clip_grad_norm);
  TORCH_CHECK_VALUE(c.accumulate >= 1, "accumulate must be >= 1, got ", c.accumulate);
  for (const double w : c.class_weights) {
    TORCH_CHECK_VALUE(w >= 0.0 && std::isfinite(w), "class_weights must be finite and >= 0, got ", w);
  }
  TORCH_CHECK_VALUE(c.class_weights.empty() || c.is_classification(),
                    "class_weights apply to task='classification' only, got task='", c.task, "'");
  TORCH_CHECK_VALUE(c.label_smoothing >= 0.0 && c.label_smoothing < 1.0, "label_smoothing must be in [0, 1), got ",
                    c.label_smoothing);
  TORCH_CHECK_VALUE(c.augment_crop >= 0, "augment_crop must be >= 0 (pixels of padding, 0 = off), got ", c.augment_crop);
  TORCH_CHECK_VALUE(c.sampler == "shuffle" || c.sampler == "balanced",
                    "sampler must be one of ['shuffle', 'balanced'], got '", c.sampler, "'");
  TORCH_CHECK_VALUE(c.sampler != "balanced" || c.is_classification(),
                    "sampler='balanced' needs task='classification', got task='", c.task, "'");
  TORCH_CHECK_VALUE(c.early_stopping >= 0, "early_stopping must be >= 0 (epochs of patience, 0 = off), got ",
                    c.early_stopping);
  TORCH_CHECK_VALUE(c.ema >= 0.0 && c.ema < 1.0, "ema must be in [0, 1) (0 = off), got ", c.ema);
  TORCH_CHECK_VALUE(c.precision == "fp32" || c.precision == "bf16",
                    "precision must be one of ['fp32', 'bf16'], got '", c.precision, "'");
  TORCH_CHECK_VALUE(c.on_nan == "stop" || c.on_nan == "skip", "on_nan must be one of ['stop', 'skip'], got '",
                    c.on_nan, "'");
  TORCH_CHECK_VALUE(c.runner == "auto" || c.runner == "script" || c.runner == "trace" || c.runner == "python",
                    "runner must be one of ['auto', 'script', 'trace', 'python'], got '", c.runner, "'");
  TORCH_CHECK_VALUE(c.trim_padding == "auto" || c.trim_padding == "true" || c.trim_padding == "false",
                    "trim_padding must be one of ['auto', 'true', 'false'], got '", c.trim_padding, "'");
  TORCH_CHECK_VALUE(!c.group_by_length || c.trim_padding != "false",
                    "group_by_length=True groups rows of similar lengths for trimming, and trim_padding is off");
  TORCH_CHECK_VALUE(c.cache_frozen == "auto" || c.cache_frozen == "true" || c.cache_frozen == "false",
                    "cache_frozen must be one of ['auto', 'true', 'false'], got '", c.cache_frozen, "'");
  TORCH_CHECK_VALUE(c.cache_frozen_gb > 0.0 && std::isfinite(c.cache_frozen_gb), "cache_frozen_gb must be > 0, got ",
                    c.cache_frozen_gb);
  TORCH_CHECK_VALUE(c.num_workers >= 0, "num_workers must be >= 0 (0 = read in the training process), got ",
                    c.num_workers);
  TORCH_CHECK_VALUE(c.prefetch >= 1, "prefetch must be >= 1 (batches each worker reads ahead), got ", c.prefetch);
  TORCH_CHECK_VALUE(c.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0 = each epoch), got ",
                    c.checkpoint_every);
  TORCH_CHECK_VALUE(c.keep_last >= 0, "keep_last must be >= 0 (0 = keep all), got ", c.keep_last);
  TORCH_CHECK_VALUE(c.distributed == "auto" || c.distributed == "off",
                    "distributed must be one of ['auto', 'off'], got '", c.distributed, "'");
  TORCH_CHECK_VALUE(c.bucket_mb > 0.0 && std::isfinite(c.bucket_mb), "bucket_mb must be > 0, got ", c.bucket_mb);
  TORCH_CHECK_VALUE(c.dist_timeout > 0.0 && std::isfinite(c.dist_timeout), "dist_timeout must be > 0 seconds, got ",
                    c.dist_timeout);
  // Last, so that an out-of-range value is reported as such before "has no effect with this optimizer".
  check_optimizer_settings(c);
}

}  // namespace finetune
