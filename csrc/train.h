// The fine-tuning loop: train, evaluate, predict and the learning-rate finder as plain free functions.
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
  at::Tensor loss;              // this step's loss (detached, on the device: call item() only if needed)
  double lr = 0.0;              // of the first parameter group
  double epoch_seconds = 0.0;   // training time so far this epoch
};

struct EpochRecord {
  int64_t epoch = 0;
  double train_loss = 0.0;      // mean over the epoch's examples (class-weighted when weights are set)
  std::map<std::string, double> val;  // validation metrics, empty without validation data
  double lr = 0.0;              // of the first parameter group, after the epoch's last step
  double seconds = 0.0;         // training time of the epoch (validation excluded)
  double samples_per_s = 0.0;
};

// Extension points of the loop. All are optional.
struct TrainHooks {
  // After each optimizer step; returning true stops training after this step.
  std::function<bool(const StepInfo&)> on_step;
  // After each epoch's validation; returning true stops training.
  std::function<bool(const EpochRecord&)> on_epoch_end;
  // Between backward and the optimizer step, with the parameters whose .grad() is set: a data-parallel
  // run all-reduces them here.
  std::function<void(const std::vector<at::Tensor>&)> reduce_gradients;
};

struct ParamGroupReport {
  std::vector<std::string> names;
  double lr = 0.0;            // base rate, before the schedule
  double weight_decay = 0.0;
  int64_t from_epoch = 0;     // > 0 for groups unfrozen during training
};

struct TrainResult {
  std::vector<EpochRecord> history;
  Metrics metrics;                    // final validation metrics (empty without validation data)
  std::vector<int64_t> class_counts;  // training examples per class in the sampled subset
  int64_t train_size = 0;             // examples in the sampled subset
  int64_t steps = 0;                  // optimizer steps
  double seconds = 0.0;
  bool stopped = false;               // stopped before the last epoch (a hook, or early stopping)
  int64_t best_epoch = -1;            // by config.monitor; -1 when nothing was monitored
  double best_value = 0.0;
  std::vector<ParamGroupReport> param_groups;
};

TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks = {});

// Loss and metrics of the model on `data`, in eval mode without autograd, in batches.
Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config);

// The model's raw outputs (logits for classification) for `inputs`, in batches, on the CPU.
at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config);

struct LrFinderResult {
  std::vector<double> lrs;
  std::vector<double> losses;           // smoothed (exponential moving average, bias-corrected)
  double suggestion = 0.0;              // the rate where the smoothed loss falls fastest
  bool diverged = false;                // stopped because the loss blew up
};

// fastai-style range test: `num_steps` optimizer steps with the rate growing exponentially from start_lr to
// end_lr, stopping early once the smoothed loss exceeds diverge_factor x its minimum. The model's
// parameters and buffers are restored afterwards.
LrFinderResult find_lr(Model& model, const Dataset& data, const TrainConfig& config, double start_lr, double end_lr,
                       int64_t num_steps, double diverge_factor);

// Parses config.device, checking that the device exists here.
at::Device resolve_device(const std::string& device);

}  // namespace finetune
