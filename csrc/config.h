// TrainConfig: the C++ mirror of finetune.config.TrainConfig (python/finetune/config.py), field for field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace finetune {

using StringList = std::vector<std::string>;
using PatternMultipliers = std::vector<std::pair<std::string, double>>;  // in the order given: first match wins
using UnfreezeSchedule = std::map<int64_t, StringList>;                  // epoch -> patterns
using Weights = std::vector<double>;

// One list drives the struct, its Python binding and field_names(), so the three cannot drift apart.
// The Python dataclass is the source of truth for defaults; tests/test_config.py checks both agree.
// X(type, name, default)
#define FINETUNE_CONFIG_FIELDS(X)                                                       \
  X(std::string, task, "classification") /* "classification", "regression", "ranking" */ \
  X(int64_t, epochs, 10)                                                                \
  X(int64_t, batch_size, 32) /* 1 = stochastic, 0 = full batch */                       \
  X(int64_t, eval_batch_size, 1024)                                                     \
  X(std::string, optimizer, "sgd")                                                      \
  X(double, lr, 0.01)                                                                   \
  X(double, momentum, 0.9) /* sgd */                                                    \
  X(bool, nesterov, false) /* sgd */                                                    \
  X(double, weight_decay, 0.0)                                                          \
  X(bool, decay_norm_and_bias, false) /* weight decay on 1-d params (biases, norms) */  \
  X(double, beta1, 0.9)   /* adam, adamw */                                             \
  X(double, beta2, 0.999) /* adam, adamw */                                             \
  X(double, eps, 1e-8)    /* adam, adamw, rmsprop */                                    \
  X(double, alpha, 0.99)  /* rmsprop smoothing */                                       \
  X(std::string, schedule, "constant")                                                  \
  X(double, warmup, 0.0) /* steps (>= 1) or a fraction of all steps (< 1) */            \
  X(int64_t, step_size, 0) /* "step": optimizer steps between decays, 0 = one epoch */  \
  X(double, gamma, 0.1)    /* "step": decay factor */                                   \
  X(double, min_lr, 0.0)   /* "cosine", "linear": final rate */                         \
  X(double, pct_start, 0.3) /* "onecycle": fraction of steps spent warming up */        \
  X(bool, cycle_momentum, true) /* "onecycle": momentum/beta1 against the rate */       \
  X(double, base_momentum, 0.85) /* "onecycle": at the peak rate */                     \
  X(double, max_momentum, 0.95)  /* "onecycle": at the start and the end */             \
  X(StringList, freeze, {}) /* parameter-name prefixes or regexes */                    \
  X(UnfreezeSchedule, unfreeze_at, {}) /* epoch -> patterns made trainable then */      \
  X(PatternMultipliers, lr_groups, {}) /* pattern -> lr multiplier */                   \
  X(double, layer_decay, 1.0) /* lr x layer_decay^depth, counted from the head */       \
  X(double, clip_grad_norm, 0.0) /* 0 = off */                                          \
  X(int64_t, accumulate, 1) /* micro-batches per optimizer step */                      \
  X(Weights, class_weights, {}) /* per-class loss weights, empty = none */              \
  X(double, label_smoothing, 0.0)                                                       \
  X(int64_t, augment_crop, 0) /* images: random crop after padding by this many pixels */ \
  X(bool, augment_flip, false) /* images: random horizontal flip */                     \
  X(std::string, sampler, "shuffle") /* "shuffle" or "balanced" (with replacement) */   \
  X(int64_t, early_stopping, 0) /* patience in epochs, 0 = off */                       \
  X(std::string, monitor, "val_loss")                                                   \
  X(bool, restore_best, false)                                                          \
  X(double, ema, 0.0) /* decay of the weights' moving average, 0 = off */               \
  X(std::string, precision, "fp32") /* "fp32" or "bf16" (autocast) */                   \
  X(std::string, on_nan, "stop") /* NaN/inf loss or gradient: "stop" or "skip" the step */ \
  X(std::string, checkpoint_dir, "") /* "" = no checkpoints */                          \
  X(int64_t, checkpoint_every, 0) /* optimizer steps between checkpoints, 0 = each epoch */ \
  X(int64_t, keep_last, 3) /* checkpoints kept, 0 = all */                              \
  X(std::string, distributed, "auto") /* "auto": data-parallel when launched by torchrun; "off" */ \
  X(double, bucket_mb, 25.0) /* gradient all-reduce bucket size */                      \
  X(double, dist_timeout, 300.0) /* seconds before a collective waiting on a dead rank fails */ \
  X(double, sample_fraction, 1.0)                                                       \
  X(int64_t, sample_size, 0) /* 0 = use sample_fraction */                              \
  X(bool, stratify, true)    /* classification only */                                  \
  X(bool, shuffle, true)                                                                \
  X(bool, drop_last, false) /* drop the last incomplete batch of each epoch */         \
  X(int64_t, seed, 0)                                                                   \
  X(std::string, device, "cpu")                                                         \
  X(std::string, runner, "auto") /* a Python nn.Module's forward: "auto", "script", "trace", "python" */ \
  X(std::string, trim_padding, "auto") /* "auto", "true", "false": batches cut to their longest row (padding.h) */ \
  X(bool, group_by_length, false) /* batches of rows of similar lengths (padding.h) */     \
  X(std::string, cache_frozen, "auto") /* "auto", "true", "false": the frozen part run once (finetune.frozen) */ \
  X(double, cache_frozen_gb, 2.0) /* the cached features' budget */                     \
  X(int64_t, num_workers, 0) /* a streamed dataset: worker processes reading batches ahead (DataLoader's) */ \
  X(int64_t, prefetch, 2) /* batches each worker reads ahead (DataLoader's prefetch_factor) */ \
  X(std::string, output_key, "") /* a dict output's entry the loss reads (finetune.models), "" = logits or the first */ \
  X(int64_t, topk, 5)                                                                   \
  X(bool, progress, true)

struct TrainConfig {
#define FINETUNE_DECLARE_FIELD(type, name, default_value) type name = default_value;
  FINETUNE_CONFIG_FIELDS(FINETUNE_DECLARE_FIELD)
#undef FINETUNE_DECLARE_FIELD

  bool is_classification() const { return task == "classification"; }
  bool is_ranking() const { return task == "ranking"; }  // (user, item) interactions, BPR (ranking.h)
};

// Field names in declaration order.
std::vector<std::string> config_field_names();

// Throws c10::ValueError naming the field and the value it holds when a field is out of range.
void validate(const TrainConfig& config);

}  // namespace finetune
