// The loop. Read top to bottom: resolve the run (device, sampled subset, batches, parameter groups), then for
// each epoch unfreeze what is due, train over the subset in a fresh seeded order, validate, and record.
#include "train.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>

#include "geometry.h"
#include "optim.h"
#include "preflight.h"
#include "schedule.h"

namespace finetune {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Restores the model's train/eval mode when it goes out of scope.
class ModeGuard {
 public:
  ModeGuard(Model& model, bool training) : model_(model), previous_(model.is_training()) { model_.train(training); }
  ~ModeGuard() { model_.train(previous_); }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Model& model_;
  bool previous_;
};

// Restores every parameter's requires_grad flag (freezing changes them for the run's duration).
class RequiresGradGuard {
 public:
  explicit RequiresGradGuard(const NamedTensors& params) {
    for (const auto& [name, p] : params) saved_.emplace_back(p, p.requires_grad());
  }
  ~RequiresGradGuard() {
    for (auto& [p, flag] : saved_) p.requires_grad_(flag);
  }
  RequiresGradGuard(const RequiresGradGuard&) = delete;
  RequiresGradGuard& operator=(const RequiresGradGuard&) = delete;

 private:
  std::vector<std::pair<at::Tensor, bool>> saved_;
};

// precision="bf16": autocast on the run's device type for the forward pass and the loss.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, at::DeviceType type) : enabled_(enabled), type_(type) {
    if (!enabled_) return;
    previous_enabled_ = at::autocast::is_autocast_enabled(type_);
    previous_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, previous_enabled_);
    at::autocast::set_autocast_dtype(type_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  at::DeviceType type_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

// An exponential moving average of the parameters (config.ema), swapped in for evaluation.
class WeightAverage {
 public:
  WeightAverage(std::vector<at::Tensor> params, double decay) : params_(std::move(params)), decay_(decay) {
    at::NoGradGuard no_grad;
    for (const auto& p : params_) shadow_.push_back(p.detach().clone());
  }
  void update() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) shadow_[i].mul_(decay_).add_(params_[i].detach(), 1.0 - decay_);
  }
  // Exchanges the model's weights with the averaged ones; calling it twice restores the model.
  void swap() {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto current = params_[i].detach().clone();
      params_[i].detach().copy_(shadow_[i]);
      shadow_[i].copy_(current);
    }
  }

 private:
  std::vector<at::Tensor> params_, shadow_;
  double decay_;
};

// The averaged weights swapped into the model for as long as it lives (evaluation, saving), whatever leaves
// the scope: an exception from an interrupted evaluation must not leave the averaged weights in the model.
class AveragedWeights {
 public:
  explicit AveragedWeights(std::optional<WeightAverage>& ema) : ema_(ema) {
    if (ema_) ema_->swap();
  }
  ~AveragedWeights() {
    if (ema_) ema_->swap();
  }
  AveragedWeights(const AveragedWeights&) = delete;
  AveragedWeights& operator=(const AveragedWeights&) = delete;

 private:
  std::optional<WeightAverage>& ema_;
};

// Every tensor of the model's state (parameters, then buffers), with and without names.
NamedTensors named_state(const Model& model) {
  auto out = model.named_parameters();
  for (const auto& item : model.named_buffers()) out.push_back(item);
  return out;
}

std::vector<at::Tensor> state_tensors(const Model& model) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named_state(model)) out.push_back(t);
  return out;
}

// Freezes the parameters matching config.freeze (requires_grad off; the caller's RequiresGradGuard restores
// it) and returns the names left trainable. A parameter the caller set requires_grad=False stays frozen.
std::set<std::string> apply_freeze(const NamedTensors& params, const TrainConfig& config) {
  std::set<std::string> trainable;
  for (const auto& [name, p] : params) {
    p.requires_grad_(p.requires_grad() && !matches_any(name, config.freeze, "freeze"));
    if (p.requires_grad()) trainable.insert(name);
  }
  return trainable;
}

std::vector<at::Tensor> clone_all(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

void copy_into(const std::vector<at::Tensor>& destination, const std::vector<at::Tensor>& source) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < destination.size(); ++i) destination[i].detach().copy_(source[i]);
}

std::vector<at::Tensor> to_device(const std::vector<at::Tensor>& tensors, const at::Device& device) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.device() == device ? t : t.to(device, /*non_blocking=*/true));
  return out;
}

// The model's output must fit the task; checked once per run on the first batch, with the shapes in
// the message (a wrong head is the most common mistake when fine-tuning).
void check_output(const at::Tensor& output, const at::Tensor& targets, int64_t num_labels,
                  const TrainConfig& config) {
  const int64_t batch = targets.size(0);
  if (config.is_classification()) {
    TORCH_CHECK_VALUE(output.dim() == 2 && output.size(0) == batch, "model output has shape ", output.sizes(),
                      " but task='classification' needs (batch, num_classes) = (", batch, ", ", num_labels, " or more)");
    TORCH_CHECK_VALUE(output.size(1) >= num_labels, "model outputs ", output.size(1),
                      " classes but the labels need ", num_labels, " (largest label ", num_labels - 1, ")");
  } else {
    TORCH_CHECK_VALUE(output.dim() >= 1 && output.size(0) == batch && output.numel() == targets.numel(),
                      "model output has shape ", output.sizes(), " but task='regression' targets have shape ",
                      targets.sizes());
  }
}

int64_t num_labels(const Dataset& data, const TrainConfig& config) {
  return config.is_classification() ? data.targets.max().item<int64_t>() + 1 : 0;
}

// The one line of an error that says what went wrong: the TorchScript interpreter wraps the model's own error
// in a traceback of the scripted code, whose last line is the error itself.
std::string error_line(const std::string& message) {
  std::vector<std::string> lines;
  std::istringstream in(message);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(line);
  }
  if (lines.empty()) return message;
  const bool traceback = message.find("Traceback of TorchScript") != std::string::npos ||
                         message.find("operation failed in the TorchScript interpreter") != std::string::npos;
  return traceback ? lines.back() : lines.front();
}

// The model's forward, with the input shapes added to any error: a model that does not fit the data
// (wrong in_features, wrong image size) is the usual cause, and the shapes say so at once.
at::Tensor forward(Model& model, const std::vector<at::Tensor>& inputs, const char* split) {
  try {
    return model.forward(inputs);
  } catch (const std::exception& e) {  // c10::Error, or the TorchScript interpreter's own errors
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    const auto error = error_line(c10_error ? c10_error->what_without_backtrace() : e.what());
    std::ostringstream shapes, dtypes, hint;
    bool integer_input = false;
    for (const auto& input : inputs) {
      shapes << (shapes.tellp() ? ", " : "") << input.sizes();
      dtypes << (dtypes.tellp() ? ", " : "") << input.scalar_type();
      integer_input = integer_input || !at::isFloatingType(input.scalar_type());
    }
    if (inputs[0].size(0) == 1 && error.find("more than 1 value per channel") != std::string::npos) {
      hint << " (the epoch's last batch has 1 example, which batch norm cannot normalise in training: set "
              "drop_last=True, or a batch_size that does not leave 1 example over)";
    } else if (integer_input && (error.find("dtype") != std::string::npos || error.find("type") != std::string::npos)) {
      hint << " (integer inputs are passed as they are, for embedding ids; features for a floating-point model "
              "must be floats: X.astype('float32'))";
    }
    TORCH_CHECK_VALUE(false, "model forward() failed on ", split, " inputs of shape ", shapes.str(), " (dtype ",
                      dtypes.str(), "): ", error, hint.str());
  }
}

// The loss of a micro-batch, class-weighted per example when weights are set. A step of one micro-batch
// uses the mean (sum over weight, as torch's mean with weights does). A step of several micro-batches
// (accumulate > 1) sums each and divides by the total weight of the whole step, so that they add up to
// exactly the mean loss of the large batch they stand for, a last partial group included.
at::Tensor batch_loss(const at::Tensor& output_in, const at::Tensor& targets, const at::Tensor& class_weights,
                      const TrainConfig& config, int64_t reduction) {
  const auto output = output_in.scalar_type() == at::kBFloat16 ? output_in.to(at::kFloat) : output_in;
  if (config.is_classification()) {
    std::optional<at::Tensor> weights;
    if (class_weights.defined()) {
      // A head wider than the labels: the classes past the weights never occur as targets, and get weight 0
      // (label smoothing then spreads no probability onto them either).
      const int64_t missing = output.size(1) - class_weights.size(0);
      weights = missing > 0 ? at::constant_pad_nd(class_weights, {0, missing}, 0.0) : class_weights;
    }
    return at::cross_entropy_loss(output, targets, weights, reduction, /*ignore_index=*/-100, config.label_smoothing);
  }
  return at::mse_loss(output.reshape(targets.sizes()), targets.to(output.scalar_type()), reduction);
}

at::Tensor summed_loss(const at::Tensor& output, const at::Tensor& targets, const at::Tensor& class_weights,
                       const TrainConfig& config) {
  return batch_loss(output, targets, class_weights, config, at::Reduction::Sum);
}

// What summed_loss is divided by for the examples order[first:last]: their count (times outputs per example
// for regression), or the sum of their class weights.
double loss_denominator(const Dataset& data, const at::Tensor& order, int64_t first, int64_t last,
                        const at::Tensor& class_weights_cpu, int64_t outputs_per_example) {
  if (class_weights_cpu.defined()) {
    return class_weights_cpu.index_select(0, data.targets.index_select(0, order.slice(0, first, last))).sum().item<double>();
  }
  return static_cast<double>((last - first) * outputs_per_example);
}

bool lower_is_better(const std::string& monitor) {
  return monitor.find("loss") != std::string::npos || monitor.find("rmse") != std::string::npos ||
         monitor.find("mae") != std::string::npos;
}

double monitored_value(const EpochRecord& record, const std::string& monitor) {
  if (monitor == "train_loss") return record.train_loss;
  const auto found = record.val.find(monitor.substr(4));
  if (monitor.rfind("val_", 0) == 0 && found != record.val.end()) return found->second;
  std::ostringstream known;
  known << "'train_loss'";
  for (const auto& [name, value] : record.val) known << ", 'val_" << name << "'";
  TORCH_CHECK_VALUE(false, "monitor must be one of [", known.str(), "], got '", monitor, "'");
}

// The schedule's rate (and, for "onecycle", momentum) for every parameter group before optimizer step `step`.
void apply_schedule(torch::optim::Optimizer& optimizer, const std::vector<double>& base_lrs, const TrainConfig& config,
                    int64_t step, int64_t total_steps, int64_t steps_per_epoch) {
  auto& groups = optimizer.param_groups();
  const auto momentum = scheduled_momentum(config, step, total_steps);
  for (size_t g = 0; g < groups.size(); ++g) {
    groups[g].options().set_lr(scheduled_lr(config, base_lrs[g], step, total_steps, steps_per_epoch));
    if (momentum) optimizer_registry().at(config.optimizer).set_momentum(groups[g].options(), *momentum);
  }
}

double current_lr(const torch::optim::Optimizer& optimizer) {
  return optimizer.param_groups().empty() ? 0.0 : optimizer.param_groups().front().options().get_lr();
}

std::vector<at::Tensor> parameters_with_grad(const NamedTensors& params) {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) out.push_back(p);
  }
  return out;
}

}  // namespace

at::Device resolve_device(const std::string& name) {
  std::optional<at::Device> device;
  try {
    device.emplace(name);
  } catch (const c10::Error&) {
  }
  TORCH_CHECK_VALUE(device.has_value() && (device->is_cpu() || device->is_cuda()),
                    "device must be 'cpu', 'cuda' or 'cuda:N', got '", name, "'");
  if (device->is_cuda()) {
    const int64_t available = static_cast<int64_t>(torch::cuda::device_count());
    TORCH_CHECK_VALUE(available > 0, "device='", name, "' but CUDA is not available in this build or machine");
    TORCH_CHECK_VALUE(!device->has_index() || device->index() < available, "device='", name, "' but only ",
                      available, " CUDA device(s) are present");
  }
  return *device;
}

namespace {

NamedTensors by_name(const NamedTensors& names, const std::vector<at::Tensor>& tensors) {
  NamedTensors out;
  for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i].first, tensors[i]);
  return out;
}

// Copies `saved` (by name) into `into`; every name must be present with the same shape.
std::vector<at::Tensor> match_by_name(const NamedTensors& into, const NamedTensors& saved, const char* what,
                                      const at::Device& device) {
  std::map<std::string, at::Tensor> lookup(saved.begin(), saved.end());
  std::vector<at::Tensor> out;
  for (const auto& [name, tensor] : into) {
    const auto found = lookup.find(name);
    TORCH_CHECK_VALUE(found != lookup.end(), "checkpoint ", what, " lacks '", name, "'");
    TORCH_CHECK_VALUE(found->second.sizes() == tensor.sizes(), "checkpoint ", what, " '", name, "' has shape ",
                      found->second.sizes(), " but the model's is ", tensor.sizes());
    out.push_back(found->second.to(device));
  }
  return out;
}

// The step's loss, and whether it and every gradient are finite. The gradients are checked by the one fused
// op automatic mixed precision uses for this (a multiply by 1.0 that raises a flag on NaN/inf), so the guard
// costs one dispatch per step rather than one per parameter.
class FiniteCheck {
 public:
  explicit FiniteCheck(const at::Device& device)
      : found_(at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device))),
        one_(at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(device))) {}

  std::pair<double, bool> operator()(const at::Tensor& step_loss, const NamedTensors& params) {
    std::vector<at::Tensor> grads, others;
    for (const auto& [name, p] : params) {
      if (p.grad().defined() && p.grad().scalar_type() == at::kFloat) grads.push_back(p.grad());
      else if (p.grad().defined()) others.push_back(p.grad());
    }
    found_.zero_();
    if (!grads.empty()) at::_amp_foreach_non_finite_check_and_unscale_(grads, found_, one_);
    bool finite = found_.item<float>() == 0.0f;
    for (const auto& g : others) finite = finite && g.isfinite().all().item<bool>();  // double/half models
    const double loss = step_loss.item<double>();
    return {loss, finite && std::isfinite(loss)};
  }

 private:
  at::Tensor found_, one_;
};

}  // namespace

TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks, const LoopState* resume) {
  validate(config);
  check_dataset(train_data, config, "train");
  if (val_data) check_dataset(*val_data, config, "val");
  check_monitor(config, val_data != nullptr);
  check_augmentation(train_data, config);
  check_patterns(model.named_parameters(), config);
  const auto device = resolve_device(config.device);
  model.to(device);
  // MKL (in torch's builds with it) starts in "dynamic" mode, free to use fewer threads than asked for a call,
  // which changes its summation order from one run to the next. Setting the thread count, even to the count in
  // force, turns that off (ATen's set_num_threads calls mkl_set_dynamic(false)): seeded runs repeat bit for bit.
  at::set_num_threads(at::get_num_threads());
  // Dropout and any other randomness inside the model draw from the global generator (a stream per rank).
  at::manual_seed(static_cast<uint64_t>(config.seed + (hooks.parallel ? hooks.parallel->rank() : 0)));

  TrainResult result;
  const auto subset = sample_indices(train_data.targets, config);
  result.train_size = subset.size(0);
  if (config.is_classification()) result.class_counts = class_counts(train_data.targets, subset);
  // A step takes accumulate x batch_size examples on each rank: the global batch is that times the world size.
  const auto& parallel = hooks.parallel;
  const int64_t world = parallel ? parallel->world_size() : 1, rank = parallel ? parallel->rank() : 0;
  const StepGeometry geometry(result.train_size, config, world);
  const int64_t batch_size = geometry.batch_size, steps_per_epoch = geometry.steps_per_epoch;
  const int64_t total_steps = geometry.total_steps;
  const int64_t labels_needed = num_labels(train_data, config);
  const int64_t outputs_per_example = config.is_classification() ? 1 : train_data.targets[0].numel();

  at::Tensor class_weights_cpu, class_weights;
  if (!config.class_weights.empty()) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(config.class_weights.size()) >= labels_needed, "class_weights has ",
                      config.class_weights.size(), " entries but the labels need ", labels_needed);
    class_weights_cpu = at::tensor(config.class_weights, at::kDouble).to(at::kFloat);
    class_weights = class_weights_cpu.to(device);
  }

  // Parameters: those matching `freeze` start frozen (no gradient, no optimizer state) and become trainable
  // when an unfreeze_at entry names them. A parameter the caller set requires_grad=False stays frozen.
  const auto params = model.named_parameters();
  RequiresGradGuard restore_requires_grad(params);
  std::set<std::string> user_trainable;
  for (const auto& [name, p] : params) {
    if (p.requires_grad()) user_trainable.insert(name);
  }
  std::set<std::string> trainable = apply_freeze(params, config);
  const auto is_frozen = [&trainable](const std::string& name) { return trainable.count(name) == 0; };
  const auto initial_groups = resolve_param_groups(params, [&](const std::string& n) { return !is_frozen(n); }, config);
  auto optimizer = make_optimizer(initial_groups, config);
  std::vector<double> base_lrs;
  const auto report_groups = [&](const std::vector<ParamGroupSpec>& groups, int64_t epoch) {
    for (const auto& g : groups) {
      base_lrs.push_back(config.lr * g.lr_multiplier);
      result.param_groups.push_back(ParamGroupReport{g.names, config.lr * g.lr_multiplier, g.weight_decay, epoch});
    }
  };
  report_groups(initial_groups, 0);
  const auto unfreeze = [&](int64_t epoch) {
    const auto due = config.unfreeze_at.find(epoch);
    if (due == config.unfreeze_at.end()) return;
    std::set<std::string> unfrozen;
    for (const auto& [name, p] : params) {
      if (is_frozen(name) && user_trainable.count(name) && matches_any(name, due->second, "unfreeze_at")) {
        unfrozen.insert(name);
        p.requires_grad_(true);
      }
    }
    trainable.insert(unfrozen.begin(), unfrozen.end());
    const auto groups = resolve_param_groups(params, [&](const std::string& n) { return unfrozen.count(n) > 0; }, config);
    add_param_groups(*optimizer, groups, config);
    report_groups(groups, epoch);
  };

  std::optional<WeightAverage> ema;
  std::vector<at::Tensor> all_params;
  for (const auto& [name, p] : params) all_params.push_back(p);
  if (config.ema > 0.0) ema.emplace(all_params, config.ema);
  std::vector<at::Tensor> best_state;
  std::map<std::string, double> best_metrics;
  int64_t epochs_without_improvement = 0;
  const bool autocast = config.precision == "bf16";

  // Resuming: replay the unfreezing up to the saved epoch (the optimizer's groups come back in the same
  // order), then restore the optimizer, the generator and the loop's counters.
  int64_t start_epoch = 0, start_step = 0;
  double resumed_loss = 0.0, resumed_weight = 0.0, resumed_seconds = 0.0;
  int64_t resumed_samples = 0;
  if (resume) {
    for (int64_t e = 0; e <= std::min(resume->epoch, config.epochs - 1); ++e) unfreeze(e);
    NamedTensors optimizer_saved;
    for (const auto& [name, t] : resume->optimizer) optimizer_saved.emplace_back(name, t.to(device));
    load_optimizer_state(*optimizer, params, optimizer_saved);
    if (resume->rng_state.defined()) {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(resume->rng_state);
    }
    if (ema && !resume->ema.empty()) {
      ema.emplace(all_params, config.ema);
      AveragedWeights averaged(ema);  // what is copied in here becomes the average when it is swapped back out
      copy_into(all_params, match_by_name(params, resume->ema, "ema weights", device));
    }
    if (!resume->best.empty()) best_state = match_by_name(named_state(model), resume->best, "best weights", device);
    start_epoch = resume->epoch;
    start_step = resume->epoch_step;
    result.steps = resume->steps;
    result.skipped_steps = resume->skipped_steps;
    result.history = resume->history;
    result.best_epoch = resume->best_epoch;
    result.best_value = resume->best_value;
    best_metrics = resume->best_metrics;
    epochs_without_improvement = resume->epochs_without_improvement;
    resumed_loss = resume->loss_sum;  // the whole world's (each step's loss is summed over the ranks)
    resumed_weight = resume->weight_sum, resumed_seconds = resume->epoch_seconds;
    resumed_samples = resume->samples;
    if (!result.history.empty()) result.metrics.values = result.history.back().val;
  }

  // The state a checkpoint records; model weights are read by the hook from the model itself.
  const auto snapshot = [&](int64_t epoch, int64_t epoch_step, double loss_sum, double weight_sum, int64_t samples,
                            double epoch_seconds) {
    LoopState state;
    state.epoch = epoch;
    state.epoch_step = epoch_step;
    state.steps = result.steps;
    state.skipped_steps = result.skipped_steps;
    state.loss_sum = loss_sum;
    state.weight_sum = weight_sum;
    state.samples = samples;
    state.epoch_seconds = epoch_seconds;
    state.history = result.history;
    state.best_epoch = result.best_epoch;
    state.best_value = result.best_value;
    state.epochs_without_improvement = epochs_without_improvement;
    state.best_metrics = best_metrics;
    {
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      state.rng_state = generator.get_state();
    }
    state.optimizer = optimizer_state(*optimizer, params);
    if (ema) {
      AveragedWeights averaged(ema);
      state.ema = by_name(params, clone_all(all_params));
    }
    if (!best_state.empty()) state.best = by_name(named_state(model), best_state);
    return state;
  };
  // Only rank 0 writes checkpoints; every rank can resume from them.
  const bool checkpointing = static_cast<bool>(hooks.on_checkpoint) && !config.checkpoint_dir.empty();
  FiniteCheck check_finite(device);
  std::vector<at::Tensor> trainable_tensors, model_buffers;
  for (const auto& [name, buffer] : model.named_buffers()) model_buffers.push_back(buffer);
  if (parallel) parallel->broadcast(state_tensors(model));  // every rank starts from rank 0's weights

  ModeGuard restore_mode(model, /*training=*/true);
  bool stop_asked = false;  // by this rank's on_step (a data-parallel run stops on all ranks together)
  const auto run_start = Clock::now();
  for (int64_t epoch = start_epoch; epoch < config.epochs && !result.stopped; ++epoch) {
    const bool resuming_here = resume && epoch == start_epoch;
    if (!resuming_here) unfreeze(epoch);
    TORCH_CHECK_VALUE(!trainable.empty(), "model has no trainable parameters at epoch ", epoch,
                      " (all are frozen by `freeze` or have requires_grad=False)");

    model.train(true);
    model.keep_frozen_batchnorm_in_eval(is_frozen);
    trainable_tensors.clear();
    for (const auto& [name, p] : params) {
      if (p.requires_grad()) trainable_tensors.push_back(p);
    }
    const auto order = config.sampler == "balanced"
                           ? balanced_epoch_order(train_data.targets, subset, config.seed, epoch)
                           : epoch_order(subset, config.seed, epoch, config.shuffle);
    // Summed on the CPU in double, step by step, so that a resumed epoch adds up exactly as an unbroken one.
    double loss_sum = resuming_here ? resumed_loss : 0.0, weight_sum = resuming_here ? resumed_weight : 0.0;
    int64_t samples = resuming_here ? resumed_samples : 0;
    const double seconds_before = resuming_here ? resumed_seconds : 0.0;
    const auto epoch_start = Clock::now();
    int64_t epoch_step = resuming_here ? start_step : 0;  // steps taken in this epoch
    for (int64_t s = epoch_step; s < steps_per_epoch; ++s) {
      // The step's examples are order[first:last]; this rank takes the contiguous share
      // order[mine_first:mine_last], so the ranks' shares make up exactly the single-process step.
      const auto [first, last, mine_first, mine_last] = geometry.step(s, rank);
      const double denominator = loss_denominator(train_data, order, first, last, class_weights_cpu, outputs_per_example);
      apply_schedule(*optimizer, base_lrs, config, result.steps, total_steps, steps_per_epoch);
      optimizer->zero_grad();
      // One micro-batch: its mean loss is the step's. Several (accumulation, or ranks): each one's sum over
      // the whole step's weight, and the ranks' gradients summed.
      const bool one_batch = world == 1 && last - first <= batch_size;
      at::Tensor step_loss;  // this rank's part of the step's mean loss; after the all-reduce, the whole of it
      for (int64_t begin = mine_first; begin < mine_last; begin += batch_size) {
        const int64_t end = std::min(begin + batch_size, mine_last);
        const auto batch = train_data.gather(order.slice(0, begin, end));
        const auto targets = batch.targets.to(device, /*non_blocking=*/true);
        at::Tensor loss;
        {
          AutocastGuard bf16(autocast, device.type());
          const auto inputs = augment_images(to_device(batch.inputs, device), config.augment_crop,
                                             config.augment_flip, config.seed, epoch,
                                             (s * world + rank) * config.accumulate + (begin - mine_first) / batch_size);
          const auto output = forward(model, inputs, "training");
          if (result.steps == 0 && begin == mine_first) check_output(output, targets, labels_needed, config);
          loss = one_batch ? batch_loss(output, targets, class_weights, config, at::Reduction::Mean)
                           : summed_loss(output, targets, class_weights, config) / denominator;
        }
        step_loss = step_loss.defined() ? step_loss + loss.detach() : loss.detach();
        // The step's last backward starts the gradient all-reduce, bucket by bucket, as it goes.
        if (parallel && end == mine_last) parallel->expect_gradients(trainable_tensors);
        loss.backward();
      }
      if (!step_loss.defined()) step_loss = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device));
      if (parallel) {
        // The step's loss and any rank's request to stop travel with the gradients: every rank then holds the
        // whole step's loss and takes the same decisions (a non-finite step is skipped everywhere or
        // nowhere; a stop ends the run here everywhere, this step dropped, so no rank waits on the others).
        const auto summed = parallel->sum_gradients(
            trainable_tensors, at::stack({step_loss, at::full({}, stop_asked ? 1.0 : 0.0, step_loss.options())}));
        step_loss = summed[0];
        if (summed[1].item<double>() > 0.0) {
          result.stopped = true;
          break;
        }
      }
      const auto [step_loss_value, finite] = check_finite(step_loss, params);
      if (!finite && config.on_nan == "stop") {
        const auto indices = order.slice(0, first, std::min(first + 8, last));
        std::ostringstream shown;
        for (int64_t i = 0; i < indices.size(0); ++i) shown << (i ? ", " : "") << indices[i].item<int64_t>();
        TORCH_CHECK_VALUE(false, "non-finite loss or gradient at epoch ", epoch, ", step ", s + 1, " of ",
                          steps_per_epoch, " (run step ", result.steps + 1, "), training examples [", shown.str(),
                          last - first > 8 ? ", ..." : "", "] (on_nan='stop'; on_nan='skip' drops such steps)");
      }
      if (finite) {
        if (config.clip_grad_norm > 0.0) {
          torch::nn::utils::clip_grad_norm_(parameters_with_grad(params), config.clip_grad_norm);
        }
        optimizer->step();
        if (ema) ema->update();
        loss_sum += step_loss_value * denominator;
        weight_sum += denominator;
      } else {
        result.skipped_steps += 1;
      }
      samples += last - first;
      result.steps += 1;
      epoch_step = s + 1;
      const double elapsed = seconds_before + seconds_since(epoch_start);
      if (hooks.on_step) {
        StepInfo info;
        info.epoch = epoch;
        info.step = result.steps;
        info.epoch_step = s + 1;
        info.steps_per_epoch = steps_per_epoch;
        info.samples = samples;
        info.loss = step_loss_value;
        info.lr = current_lr(*optimizer);
        info.epoch_seconds = elapsed;
        bool stop = false;
        try {
          stop = hooks.on_step(info);
        } catch (...) {
          // Ctrl-C, SIGTERM or an error in a callback: the step is complete, so save it before leaving
          // (no collective here: other ranks may not be stopping).
          if (checkpointing && rank == 0) {
            hooks.on_checkpoint(snapshot(epoch, s + 1, loss_sum, weight_sum, samples, elapsed), "interrupt");
          }
          throw;
        }
        if (stop && !parallel) {
          result.stopped = true;
          break;
        }
        stop_asked = stop_asked || stop;  // data-parallel: acted on with the next step's gradients, or at epoch end
      }
      if (checkpointing && config.checkpoint_every > 0 && result.steps % config.checkpoint_every == 0) {
        if (rank == 0) hooks.on_checkpoint(snapshot(epoch, s + 1, loss_sum, weight_sum, samples, elapsed), "step");
      }
    }
    EpochRecord record;
    record.epoch = epoch;
    record.seconds = seconds_before + seconds_since(epoch_start);
    record.train_loss = loss_sum / std::max(weight_sum, 1e-300);
    record.samples_per_s = static_cast<double>(samples) / std::max(record.seconds, 1e-9);
    record.lr = current_lr(*optimizer);
    // The ranks' weights are equal by construction, but batch-norm running statistics are each rank's own:
    // rank 0's (those it saves) go to every rank, so that all evaluate, and return, the same model.
    if (parallel && !model_buffers.empty()) parallel->broadcast(model_buffers);
    if (val_data) {
      try {
        AveragedWeights averaged(ema);
        result.metrics = evaluate(model, *val_data, config, parallel.get(), hooks.poll);
      } catch (...) {
        // Ctrl-C during validation: the epoch's steps are done; a resumed run validates this epoch again.
        if (checkpointing && rank == 0) {
          hooks.on_checkpoint(snapshot(epoch, epoch_step, loss_sum, weight_sum, samples, record.seconds), "interrupt");
        }
        throw;
      }
      record.val = result.metrics.values;
    }
    if (val_data || config.monitor == "train_loss") {
      const double value = monitored_value(record, config.monitor);
      const bool improved = result.best_epoch < 0 ||
                            (lower_is_better(config.monitor) ? value < result.best_value : value > result.best_value);
      if (improved) {
        result.best_epoch = epoch;
        result.best_value = value;
        best_metrics = result.metrics.values;
        epochs_without_improvement = 0;
        if (config.restore_best) {
          AveragedWeights averaged(ema);
          best_state = clone_all(state_tensors(model));
        }
      } else if (config.early_stopping > 0 && ++epochs_without_improvement >= config.early_stopping) {
        result.stopped = true;
      }
    }
    result.history.push_back(record);
    bool stop = hooks.on_epoch_end && hooks.on_epoch_end(record);
    if (parallel) stop = parallel->sum(stop || stop_asked ? 1.0 : 0.0) > 0.0;  // every rank stops, or none
    if (stop) result.stopped = true;
    if (checkpointing && rank == 0) {
      // A stopped run is complete: its checkpoint says so, and resuming it trains no further.
      hooks.on_checkpoint(snapshot(result.stopped ? config.epochs : epoch + 1, 0, 0.0, 0.0, 0, 0.0), "epoch");
    }
  }
  if (config.restore_best && !best_state.empty()) {
    copy_into(state_tensors(model), best_state);
    result.metrics.values = best_metrics;
  } else if (ema) {
    ema->swap();  // the returned model is the one that was evaluated
  }
  if (val_data && (result.history.empty() || (config.restore_best && !best_state.empty()))) {
    result.metrics = evaluate(model, *val_data, config, parallel.get(), hooks.poll);  // also fills the confusion matrix of what is returned
  }
  result.seconds = seconds_since(run_start);
  if (parallel) {
    result.communication_seconds = parallel->communication_seconds();
    result.buckets_reduced = parallel->buckets_reduced();
    result.buckets_overlapped = parallel->buckets_overlapped();
  }
  return result;
}

at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config,
                   const std::function<void()>& poll) {
  TORCH_CHECK_VALUE(!inputs.empty() && inputs[0].dim() >= 1, "predict needs at least one input tensor");
  const int64_t n = inputs[0].size(0);
  TORCH_CHECK_VALUE(n > 0, "X is empty (0 examples)");
  for (const auto& input : inputs) {
    TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(0) == n, "all inputs must have ", n, " rows, got shape ",
                      input.sizes());
  }
  const auto device = resolve_device(config.device);
  model.to(device);
  ModeGuard eval_mode(model, /*training=*/false);
  // NoGradGuard rather than InferenceMode: inference tensors that reach a TorchScript module's cached
  // state break its next training step ("Inference tensors cannot be saved for backward").
  at::NoGradGuard no_autograd;
  std::vector<at::Tensor> outputs;
  for (int64_t begin = 0; begin < n; begin += config.eval_batch_size) {
    if (poll) poll();  // Ctrl-C
    const int64_t end = std::min(begin + config.eval_batch_size, n);
    std::vector<at::Tensor> batch;
    for (const auto& input : inputs) batch.push_back(input.slice(0, begin, end).to(device));
    AutocastGuard bf16(config.precision == "bf16", device.type());
    outputs.push_back(forward(model, batch, "evaluation").to(at::kCPU).to(at::kFloat));
  }
  return at::cat(outputs);
}

Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config, Parallel* parallel,
                 const std::function<void()>& poll) {
  check_dataset(data, config, "data");
  const int64_t n = data.size();
  // Every rank holds the whole split; each evaluates the contiguous shard [n*rank/world, n*(rank+1)/world).
  const bool sharded = parallel && parallel->world_size() > 1 && n >= parallel->world_size();
  const int64_t world = sharded ? parallel->world_size() : 1, rank = sharded ? parallel->rank() : 0;
  const auto shard = data.slice(n * rank / world, n * (rank + 1) / world);
  const auto outputs = predict(model, shard.inputs, config, poll);
  check_output(outputs, shard.targets, num_labels(data, config), config);
  SumOverRanks sum_over_ranks;
  if (sharded) sum_over_ranks = [parallel](const at::Tensor& sums) { return parallel->sum(sums); };
  if (config.is_classification()) return classification_metrics(outputs, shard.targets, config.topk, sum_over_ranks);
  return regression_metrics(outputs, shard.targets, sum_over_ranks);
}

LrFinderResult find_lr(Model& model, const Dataset& data, const TrainConfig& config, double start_lr, double end_lr,
                       int64_t num_steps, double diverge_factor) {
  validate(config);
  check_dataset(data, config, "train");
  TORCH_CHECK_VALUE(start_lr > 0.0 && end_lr > start_lr, "find_lr needs 0 < start_lr < end_lr, got start_lr=",
                    start_lr, ", end_lr=", end_lr);
  TORCH_CHECK_VALUE(num_steps >= 2, "num_steps must be >= 2, got ", num_steps);
  TORCH_CHECK_VALUE(diverge_factor > 1.0, "diverge_factor must be > 1, got ", diverge_factor);
  const auto device = resolve_device(config.device);
  model.to(device);
  at::manual_seed(static_cast<uint64_t>(config.seed));
  const auto saved = clone_all(state_tensors(model));

  const auto params = model.named_parameters();
  check_patterns(params, config);
  RequiresGradGuard restore_requires_grad(params);
  const auto trainable = apply_freeze(params, config);
  const auto groups = resolve_param_groups(params, [&](const std::string& n) { return trainable.count(n) > 0; }, config);
  TORCH_CHECK_VALUE(!groups.empty(), "model has no trainable parameters (all are frozen or have requires_grad=False)");
  auto optimizer = make_optimizer(groups, config);
  at::Tensor class_weights;
  if (!config.class_weights.empty()) class_weights = at::tensor(config.class_weights, at::kDouble).to(at::kFloat).to(device);

  const auto subset = sample_indices(data.targets, config);
  const int64_t batch_size = config.batch_size == 0 ? subset.size(0) : std::min(config.batch_size, subset.size(0));
  const int64_t labels_needed = num_labels(data, config);
  ModeGuard train_mode(model, /*training=*/true);
  LrFinderResult result;
  double average = 0.0, best = std::numeric_limits<double>::infinity();
  at::Tensor order;
  for (int64_t t = 0, position = 0, epoch = 0; t < num_steps; ++t, position += batch_size) {
    if (!order.defined() || position >= order.size(0)) {
      order = epoch_order(subset, config.seed, epoch++, config.shuffle);
      position = 0;
    }
    const double lr = start_lr * std::pow(end_lr / start_lr, static_cast<double>(t) / static_cast<double>(num_steps - 1));
    for (size_t g = 0; g < optimizer->param_groups().size(); ++g) {
      optimizer->param_groups()[g].options().set_lr(lr * groups[g].lr_multiplier);
    }
    const auto batch = data.gather(order.slice(0, position, std::min(position + batch_size, order.size(0))));
    const auto targets = batch.targets.to(device);
    optimizer->zero_grad();
    at::Tensor loss;
    {
      AutocastGuard bf16(config.precision == "bf16", device.type());
      const auto output = forward(model, to_device(batch.inputs, device), "training");
      if (t == 0) check_output(output, targets, labels_needed, config);
      loss = batch_loss(output, targets, class_weights, config, at::Reduction::Mean);  // as train's steps
    }
    loss.backward();
    if (config.clip_grad_norm > 0.0) torch::nn::utils::clip_grad_norm_(parameters_with_grad(params), config.clip_grad_norm);
    optimizer->step();
    // fastai's smoothing: an exponential moving average with bias correction.
    const double value = loss.item<double>();
    average = 0.98 * average + 0.02 * value;
    const double smoothed = average / (1.0 - std::pow(0.98, static_cast<double>(t + 1)));
    result.lrs.push_back(lr);
    result.losses.push_back(smoothed);
    if (!std::isfinite(smoothed) || (t > 0 && smoothed > diverge_factor * best)) {
      result.diverged = true;
      break;
    }
    best = std::min(best, smoothed);
  }
  copy_into(state_tensors(model), saved);

  // Suggest the rate where the smoothed loss falls fastest against log(lr), skipping the noisy ends.
  const size_t n = result.losses.size();
  const size_t skip_start = std::min<size_t>(n / 10, 10), skip_end = std::min<size_t>(n / 20 + 1, 5);
  double steepest = std::numeric_limits<double>::infinity();
  result.suggestion = result.lrs.empty() ? start_lr : result.lrs[n / 2];
  for (size_t i = skip_start + 1; i + skip_end < n; ++i) {
    const double slope = (result.losses[i] - result.losses[i - 1]) / std::log(result.lrs[i] / result.lrs[i - 1]);
    if (slope < steepest) {
      steepest = slope;
      result.suggestion = result.lrs[i];
    }
  }
  return result;
}

}  // namespace finetune
