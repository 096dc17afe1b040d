// A fine-tuning run: everything train() sets up once and then steps through, with the live LoopState.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "averaging.h"
#include "config.h"
#include "dataset.h"
#include "finite.h"
#include "freezing.h"
#include "geometry.h"
#include "guards.h"
#include "models.h"
#include "optim.h"
#include "train.h"

namespace finetune {

// The model on its device, the sampled subset and its step geometry, the frozen parameters, the optimizer and
// its parameter groups, the weight average, and the LoopState the loop advances. That state is the live one:
// a checkpoint is a copy of it (plus the optimizer's, the generator's and the averages' tensors), and resuming
// assigns a saved one back.
class Run {
 public:
  Run(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
      const TrainHooks& hooks);

  void restore(const LoopState& saved);  // resume: the saved state, optimizer, generator and averages
  void start();                          // every rank from rank 0's weights; the model in training mode

  bool running() const { return state_.epoch < config_.epochs && !stopped_; }
  void begin_epoch();  // unfreeze what is due, this epoch's order
  bool stepping() const { return state_.epoch_step < geometry_.steps_per_epoch && !stopped_; }
  void step();       // one optimizer step: forward and backward over the step's micro-batches, then update
  void end_epoch();  // validate, track the best epoch, stop early, checkpoint
  TrainResult finish();

 private:
  void add_param_groups(const std::set<std::string>& unfrozen, int64_t epoch);
  void report_param_groups(const std::vector<ParamGroupSpec>& groups, int64_t epoch);
  std::vector<at::Tensor> epoch_batches() const;
  at::Tensor accumulate_gradients(const StepGeometry::Span& span, double denominator);
  bool reduce_over_ranks(at::Tensor& step_loss);
  void update(const at::Tensor& step_loss, const StepGeometry::Span& span, double denominator);
  void report_step(double step_loss);
  Metrics validate();
  double epoch_seconds() const;
  LoopState checkpoint();  // the live state with its tensors, for hooks.on_checkpoint
  void save(const char* reason);

  Model& model_;
  const Dataset& train_;
  const Dataset* val_;
  const TrainConfig& config_;
  const TrainHooks& hooks_;
  const at::Device device_;
  const int64_t rank_, world_;

  const at::Tensor subset_;  // the sampled training examples
  const StepGeometry geometry_;
  const int64_t labels_needed_, outputs_per_example_;
  const int64_t num_items_;  // task='ranking': negatives are drawn from item ids [0, num_items_)
  at::Tensor class_weights_cpu_, class_weights_;
  const NamedTensors params_;
  Freezing freezing_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<double> base_lrs_;  // per parameter group, before the schedule
  std::vector<ParamGroupReport> param_groups_;
  std::vector<at::Tensor> trainable_;  // this epoch's
  std::optional<WeightAverage> ema_;
  std::vector<at::Tensor> best_weights_;  // restore_best: the best epoch's parameters and buffers
  FiniteCheck check_finite_;
  std::optional<ModeGuard> training_mode_;

  LoopState state_;        // counters, the epoch's running sums, history, best-epoch tracking
  bool resuming_ = false;  // the first epoch continues the restored one
  bool stopped_ = false;   // a hook, early stopping, or another rank asked to stop
  bool stop_asked_ = false;  // by this rank's on_step: a data-parallel run stops on all ranks together
  Metrics metrics_;        // the latest validation
  at::Tensor order_;       // this epoch's order of the subset
  at::Tensor lengths_;     // group_by_length: each example's length under its attention mask
  std::chrono::steady_clock::time_point run_start_, epoch_start_;
  double seconds_before_ = 0.0;  // of this epoch, before a resume
  bool timing_ = false;          // the epoch's clock runs (its steps), or stopped (validation onwards)
};

}  // namespace finetune
