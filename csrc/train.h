// The fine-tuning loop: train, evaluate and predict as plain free functions.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "data.h"
#include "metrics.h"
#include "models.h"

namespace finetune {

// Passed to the per-step hook after every optimizer step.
struct StepInfo {
  int64_t epoch = 0;            // 0-based
  int64_t step = 0;             // optimizer steps since the run began, this one included
  int64_t epoch_step = 0;       // 1-based within the epoch
  int64_t steps_per_epoch = 0;
  int64_t samples = 0;          // training examples seen this epoch
  at::Tensor loss;              // this batch's loss (detached, on the device: call item() only if needed)
  double lr = 0.0;
  double epoch_seconds = 0.0;   // training time so far this epoch
};

struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0.0;      // mean over the epoch's examples
  std::map<std::string, double> val;  // validation metrics, empty without validation data
  double lr = 0.0;
  double seconds = 0.0;         // training time of the epoch (validation excluded)
  double samples_per_s = 0.0;
};

// Extension points of the loop. All are optional.
struct TrainHooks {
  // After each optimizer step; returning true stops training after this step.
  std::function<bool(const StepInfo&)> on_step;
  // After each epoch's validation; returning true stops training (early stopping).
  std::function<bool(const EpochRecord&)> on_epoch_end;
  // Between backward and the optimizer step, with the parameters whose .grad() is set: a data-parallel
  // run all-reduces them here.
  std::function<void(const std::vector<at::Tensor>&)> reduce_gradients;
};

struct TrainResult {
  std::vector<EpochRecord> history;
  Metrics metrics;                    // final validation metrics (empty without validation data)
  std::vector<int64_t> class_counts;  // training examples per class in the sampled subset
  int64_t train_size = 0;             // examples in the sampled subset
  int64_t steps = 0;
  double seconds = 0.0;
  bool stopped = false;               // a hook asked to stop early
};

TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks = {});

// Loss and metrics of the model on `data`, in eval mode without autograd, in batches.
Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config);

// The model's raw outputs (logits for classification) for `inputs`, in batches, on the CPU.
at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config);

// Parses config.device, checking that the device exists here.
at::Device resolve_device(const std::string& device);

}  // namespace finetune
