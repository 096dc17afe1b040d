// TrainConfig: the C++ mirror of finetune.config.TrainConfig (python/finetune/config.py), field for field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace finetune {

// One list drives the struct, its Python binding and field_names(), so the three cannot drift apart.
// The Python dataclass is the source of truth for defaults; tests/test_config.py checks both agree.
// X(type, name, default)
#define FINETUNE_CONFIG_FIELDS(X)                                                       \
  X(std::string, task, "classification") /* "classification" or "regression" */       \
  X(int64_t, epochs, 10)                                                                \
  X(int64_t, batch_size, 32) /* 1 = stochastic, 0 = full batch */                       \
  X(int64_t, eval_batch_size, 1024)                                                     \
  X(std::string, optimizer, "sgd")                                                      \
  X(double, lr, 0.01)                                                                   \
  X(double, momentum, 0.9) /* sgd */                                                    \
  X(bool, nesterov, false) /* sgd */                                                    \
  X(double, weight_decay, 0.0)                                                          \
  X(double, beta1, 0.9)   /* adam, adamw */                                             \
  X(double, beta2, 0.999) /* adam, adamw */                                             \
  X(double, eps, 1e-8)    /* adam, adamw */                                             \
  X(double, sample_fraction, 1.0)                                                       \
  X(int64_t, sample_size, 0) /* 0 = use sample_fraction */                              \
  X(bool, stratify, true)    /* classification only */                                  \
  X(bool, shuffle, true)                                                                \
  X(int64_t, seed, 0)                                                                   \
  X(std::string, device, "cpu")                                                         \
  X(int64_t, topk, 5)                                                                   \
  X(bool, progress, true)

struct TrainConfig {
#define FINETUNE_DECLARE_FIELD(type, name, default_value) type name = default_value;
  FINETUNE_CONFIG_FIELDS(FINETUNE_DECLARE_FIELD)
#undef FINETUNE_DECLARE_FIELD

  bool is_classification() const { return task == "classification"; }
};

// Field names in declaration order.
std::vector<std::string> config_field_names();

// Throws c10::ValueError naming the field and the value it holds when a field is out of range.
void validate(const TrainConfig& config);

}  // namespace finetune
