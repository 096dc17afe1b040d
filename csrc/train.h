// The fine-tuning loop: train, evaluate, predict and the learning-rate finder as plain free functions.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config.h"
#include "dataset.h"
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
  double loss = 0.0;            // this step's mean loss
  double lr = 0.0;              // of the first parameter group
  double epoch_seconds = 0.0;   // training time so far this epoch
};

// Each record below is one list, X(type, name, default), that drives the struct and its Python binding
// (bindings.cpp: a class with these attributes, and the flat dict of a history entry or a checkpoint's counters),
// so the fields exist once. tests/test_checkpoint_files.py checks checkpoint.py's state.json schema against them.

// An epoch's numbers, besides its validation metrics (`val`: "val_<name>" in the flat dict).
#define FINETUNE_EPOCH_FIELDS(X)                                                                         \
  X(int64_t, epoch, 0)                                                                                   \
  X(double, train_loss, 0.0) /* mean over the epoch's examples (class-weighted when weights are set) */ \
  X(double, lr, 0.0)         /* of the first parameter group, after the epoch's last step */            \
  X(double, seconds, 0.0)    /* training time of the epoch (validation excluded) */                     \
  X(double, samples_per_s, 0.0)

#define FINETUNE_DECLARE_FIELD(type, name, default_value) type name = default_value;

struct EpochRecord {
  FINETUNE_EPOCH_FIELDS(FINETUNE_DECLARE_FIELD)
  std::map<std::string, double> val;  // validation metrics, empty without validation data
};

// Everything a run needs to continue exactly where it was: a checkpoint, with the model's own weights.
// Taken after an optimizer step or an epoch's end; the data order and schedule are recomputed from
// (seed, epoch, steps), the rest is here.
// The loop's counters (a checkpoint's state.json "counters").
#define FINETUNE_LOOP_COUNTERS(X)                                                                           \
  X(int64_t, epoch, 0)         /* the epoch in progress (== epochs when the run is complete) */            \
  X(int64_t, epoch_step, 0)    /* optimizer steps already taken in it */                                   \
  X(int64_t, steps, 0)         /* optimizer steps taken in the run */                                      \
  X(int64_t, skipped_steps, 0) /* on_nan="skip" */                                                         \
  X(double, loss_sum, 0.0)     /* the epoch so far: summed loss, its weight, examples and training time */ \
  X(double, weight_sum, 0.0)                                                                               \
  X(int64_t, samples, 0)                                                                                   \
  X(double, epoch_seconds, 0.0)                                                                            \
  X(int64_t, best_epoch, -1)                                                                               \
  X(double, best_value, 0.0)                                                                               \
  X(int64_t, epochs_without_improvement, 0)

struct LoopState {
  FINETUNE_LOOP_COUNTERS(FINETUNE_DECLARE_FIELD)
  std::vector<EpochRecord> history;
  std::map<std::string, double> best_metrics;
  at::Tensor rng_state;       // the global CPU generator (dropout)
  NamedTensors optimizer;     // optimizer_state()
  NamedTensors ema;           // averaged weights by parameter name (config.ema)
  NamedTensors best;          // restore_best: the best epoch's parameters and buffers by name
};

// Data-parallel training over several processes (csrc/distributed.h implements it on a c10d process
// group). Every rank runs the same loop on its own share of each step's examples.
class Parallel {
 public:
  virtual ~Parallel() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  // Makes every rank's tensors equal to rank 0's.
  virtual void broadcast(const std::vector<at::Tensor>& tensors) = 0;
  // Gradient sums, overlapped with backward. Called before a step's last backward with the trainable
  // parameters: as that backward completes a bucket of their gradients, the bucket's all-reduce starts.
  virtual void expect_gradients(const std::vector<at::Tensor>& params) = 0;
  // After the step's backward passes: starts the buckets still due (parameters backward did not reach, or
  // all of them on a rank whose share of the step was empty; a missing gradient counts as zeros), waits
  // for every bucket and writes the sums into the gradients of `params`. Returns `step_values` (the step's
  // loss) summed over the ranks: they travel with the last bucket, so it costs no collective of its own.
  virtual at::Tensor sum_gradients(const std::vector<at::Tensor>& params, const at::Tensor& step_values) = 0;
  // The element-wise sum of `value` over the ranks (returned on value's device).
  virtual at::Tensor sum(const at::Tensor& value) = 0;
  double sum(double value);
  // Gradient all-reduce bookkeeping: seconds the loop spent on it (launching, waiting, copying back),
  // buckets reduced, and how many of those started while backward still had other buckets' gradients to
  // produce (the communication that overlaps computation).
  virtual double communication_seconds() const = 0;
  virtual int64_t buckets_reduced() const = 0;
  virtual int64_t buckets_overlapped() const = 0;
};

// Extension points of the loop. All are optional.
struct TrainHooks {
  // After each optimizer step; returning true stops training after this step.
  std::function<bool(const StepInfo&)> on_step;
  // After each epoch's validation; returning true stops training.
  std::function<bool(const EpochRecord&)> on_epoch_end;
  // Data parallelism: each step's examples are split over the ranks, gradients summed before the step.
  std::shared_ptr<Parallel> parallel;
  // When a checkpoint is due (config.checkpoint_every, each epoch's end, and before an exception from
  // on_step, e.g. Ctrl-C, leaves the loop): `reason` is "step", "epoch" or "interrupt".
  std::function<void(const LoopState&, const std::string& reason)> on_checkpoint;
  // Called before each evaluation batch (validation); may throw to interrupt the run (Ctrl-C). on_step is
  // the same moment between steps.
  std::function<void()> poll;
};

struct ParamGroupReport {
  std::vector<std::string> names;
  double lr = 0.0;            // base rate, before the schedule
  double weight_decay = 0.0;
  int64_t from_epoch = 0;     // > 0 for groups unfrozen during training
};

// What a run returns besides its history, metrics and parameter groups.
#define FINETUNE_RESULT_FIELDS(X)                                                                            \
  X(std::vector<int64_t>, class_counts, {}) /* training examples per class in the sampled subset */         \
  X(int64_t, train_size, 0)                 /* examples in the sampled subset */                            \
  X(int64_t, steps, 0)                      /* optimizer steps */                                           \
  X(int64_t, skipped_steps, 0)              /* dropped by on_nan="skip" */                                  \
  X(double, seconds, 0.0)                                                                                   \
  X(double, communication_seconds, 0.0)     /* in gradient all-reduces (data-parallel runs) */             \
  X(int64_t, buckets_reduced, 0)            /* gradient buckets all-reduced (data-parallel runs) */         \
  X(int64_t, buckets_overlapped, 0)         /* of those, started while backward still worked on later ones */ \
  X(bool, stopped, false)                   /* stopped before the last epoch (a hook, or early stopping) */ \
  X(int64_t, best_epoch, -1)                /* by config.monitor; -1 when nothing was monitored */          \
  X(double, best_value, 0.0)

struct TrainResult {
  FINETUNE_RESULT_FIELDS(FINETUNE_DECLARE_FIELD)
  std::vector<EpochRecord> history;
  Metrics metrics;  // final validation metrics (empty without validation data)
  std::vector<ParamGroupReport> param_groups;
};

#undef FINETUNE_DECLARE_FIELD

// `resume`, when given, continues from a LoopState whose model weights are already in `model`.
TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks = {}, const LoopState* resume = nullptr);


}  // namespace finetune
