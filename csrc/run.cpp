// A fine-tuning run (see run.h): setting it up, one optimizer step, the end of an epoch, checkpoints.
#include "run.h"

#include <algorithm>
#include <mutex>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>

#include "augment.h"
#include "best.h"
#include "evaluate.h"
#include "forward.h"
#include "loss.h"
#include "padding.h"
#include "ranking.h"
#include "sampling.h"
#include "schedule.h"
#include "tensor_lists.h"

namespace finetune {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// `saved` (by name) in the order of `into`, on `device`; every name must be present with the same shape.
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

}  // namespace

Run::Run(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
         const TrainHooks& hooks)
    : model_(model), train_(train_data), val_(val_data), config_(config), hooks_(hooks),
      device_(resolve_device(config.device)),
      rank_(hooks.parallel ? hooks.parallel->rank() : 0), world_(hooks.parallel ? hooks.parallel->world_size() : 1),
      subset_(sample_indices(train_data.targets, config)),
      geometry_(subset_.size(0), config, world_),  // a step: accumulate x batch_size examples on each rank
      labels_needed_(num_labels(train_data, config)),
      outputs_per_example_(config.is_classification() ? 1 : train_data.targets[0].numel()),
      num_items_(config.is_ranking() ? ranking_items(train_data, "train") : 0),
      params_(model.named_parameters()),
      freezing_(params_, config),
      check_finite_(device_) {
  if (!config.class_weights.empty()) {
    TORCH_CHECK_VALUE(static_cast<int64_t>(config.class_weights.size()) >= labels_needed_, "class_weights has ",
                      config.class_weights.size(), " entries but the labels need ", labels_needed_);
    class_weights_cpu_ = at::tensor(config.class_weights, at::kDouble).to(at::kFloat);
    class_weights_ = class_weights_cpu_.to(device_);
  }
  const auto groups = resolve_param_groups(params_, [this](const std::string& n) { return !freezing_.is_frozen(n); },
                                           config_);
  optimizer_ = make_optimizer(groups, config_);
  report_param_groups(groups, /*epoch=*/0);
  if (config_.ema > 0.0) ema_.emplace(tensors_of(params_), config_.ema);
  TORCH_CHECK_VALUE(config_.trim_padding != "true" || train_.mask_input >= 0,
                    "trim_padding=True needs an attention mask among the inputs (Dataset.mask_input), and there is none");
  TORCH_CHECK_VALUE(config_.trim_padding != "false" || train_.mask_input < 0,
                    "trim_padding=False, but the dataset names input ", train_.mask_input, " as its attention mask");
  TORCH_CHECK_VALUE(!config_.group_by_length || !train_.streamed(), "group_by_length=True reads every example's "
                    "length before the epoch, and a streamed dataset's examples are read only when a batch needs them");
  TORCH_CHECK_VALUE(!config_.group_by_length || train_.mask_input >= 0,
                    "group_by_length=True needs an attention mask among the inputs to read lengths from, and there is none");
  if (config_.group_by_length) lengths_ = sequence_lengths(train_.inputs[train_.mask_input]);
}

// The parameters an unfreezing made trainable join the optimizer as new groups.
void Run::add_param_groups(const std::set<std::string>& unfrozen, int64_t epoch) {
  if (unfrozen.empty()) return;
  const auto groups = resolve_param_groups(params_, [&](const std::string& n) { return unfrozen.count(n) > 0; },
                                           config_);
  finetune::add_param_groups(*optimizer_, groups, config_);
  report_param_groups(groups, epoch);
}

void Run::report_param_groups(const std::vector<ParamGroupSpec>& groups, int64_t epoch) {
  for (const auto& g : groups) {
    base_lrs_.push_back(config_.lr * g.lr_multiplier);
    param_groups_.push_back(ParamGroupReport{g.names, config_.lr * g.lr_multiplier, g.weight_decay, epoch});
  }
}

void Run::restore(const LoopState& saved) {
  // Replay the unfreezing up to the saved epoch, so the optimizer's groups come back in the same order.
  for (int64_t e = 0; e <= std::min(saved.epoch, config_.epochs - 1); ++e) add_param_groups(freezing_.unfreeze(e), e);
  NamedTensors optimizer_saved;
  for (const auto& [name, t] : saved.optimizer) optimizer_saved.emplace_back(name, t.to(device_));
  load_optimizer_state(*optimizer_, params_, optimizer_saved, config_.optimizer);
  if (saved.rng_state.defined()) {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(saved.rng_state);
  }
  if (ema_ && !saved.ema.empty()) {
    AveragedWeights averaged(ema_);  // what is copied in here becomes the average when it is swapped back out
    copy_into(tensors_of(params_), match_by_name(params_, saved.ema, "ema weights", device_));
  }
  if (!saved.best.empty()) best_weights_ = match_by_name(named_state(model_), saved.best, "best weights", device_);
  state_ = saved;
  state_.rng_state = at::Tensor();  // the live ones are the generator, the optimizer and the averages
  state_.optimizer.clear(), state_.ema.clear(), state_.best.clear();
  if (!state_.history.empty()) metrics_.values = state_.history.back().val;
  // The rates the last step ran at: an epoch that ends right after the resume reports them, as it did unbroken.
  if (state_.steps > 0) {
    apply_schedule(*optimizer_, base_lrs_, config_, state_.steps - 1, geometry_.total_steps, geometry_.steps_per_epoch);
  }
  resuming_ = true;
}

void Run::start() {
  if (hooks_.parallel) hooks_.parallel->broadcast(tensors_of(named_state(model_)));  // rank 0's weights everywhere
  training_mode_.emplace(model_, /*training=*/true);
  run_start_ = Clock::now();
}

void Run::begin_epoch() {
  const int64_t epoch = state_.epoch;
  if (!resuming_) {
    add_param_groups(freezing_.unfreeze(epoch), epoch);
    // Summed on the CPU in double, step by step, so that a resumed epoch adds up exactly as an unbroken one.
    state_.epoch_step = 0, state_.loss_sum = 0.0, state_.weight_sum = 0.0, state_.samples = 0;
    state_.epoch_seconds = 0.0;
  }
  resuming_ = false;
  TORCH_CHECK_VALUE(freezing_.any_trainable(), "model has no trainable parameters at epoch ", epoch,
                    " (all are frozen by `freeze` or have requires_grad=False)");
  model_.train(true);
  model_.keep_frozen_batchnorm_in_eval([this](const std::string& n) { return freezing_.is_frozen(n); });
  trainable_ = freezing_.trainable_tensors();
  order_ = config_.sampler == "balanced" ? balanced_epoch_order(train_.targets, subset_, config_.seed, epoch)
                                         : epoch_order(subset_, config_.seed, epoch, config_.shuffle);
  if (config_.group_by_length) order_ = group_by_length(order_, lengths_, geometry_.batch_size * config_.accumulate * world_);
  if (train_.streamed()) train_.plan(epoch_batches(), epoch);
  seconds_before_ = state_.epoch_seconds;
  epoch_start_ = Clock::now();
  timing_ = true;
}

// The micro-batches this rank gathers in the rest of the epoch, in order: a streamed dataset reads them ahead.
std::vector<at::Tensor> Run::epoch_batches() const {
  std::vector<at::Tensor> batches;
  for (int64_t s = state_.epoch_step; s < geometry_.steps_per_epoch; ++s) {
    const auto span = geometry_.step(s, rank_);
    for (int64_t begin = span.mine_first; begin < span.mine_last; begin += geometry_.batch_size) {
      batches.push_back(order_.slice(0, begin, std::min(begin + geometry_.batch_size, span.mine_last)));
    }
  }
  return batches;
}

void Run::step() {
  // The step's examples are order[first:last]; this rank takes its contiguous share, so that the ranks'
  // shares make up exactly the single-process step.
  const auto span = geometry_.step(state_.epoch_step, rank_);
  const double denominator = loss_denominator(train_, order_, span.first, span.last, class_weights_cpu_,
                                              outputs_per_example_);
  apply_schedule(*optimizer_, base_lrs_, config_, state_.steps, geometry_.total_steps, geometry_.steps_per_epoch);
  optimizer_->zero_grad();
  at::Tensor step_loss;
  try {
    step_loss = accumulate_gradients(span, denominator);
  } catch (const ForwardInterrupted&) {
    // Ctrl-C inside a Python forward: this step has changed no weight; save where the last one left off.
    save("interrupt");
    throw;
  }
  if (!reduce_over_ranks(step_loss)) return;  // another rank asked to stop: this step is dropped everywhere
  update(step_loss, span, denominator);
}

// Forward and backward over this rank's micro-batches of the step. One micro-batch: its mean loss is the
// step's. Several (accumulation, or ranks): each one's sum over the whole step's weight.
at::Tensor Run::accumulate_gradients(const StepGeometry::Span& span, double denominator) {
  const int64_t batch_size = geometry_.batch_size;
  const bool one_batch = world_ == 1 && span.last - span.first <= batch_size;
  at::Tensor step_loss;  // this rank's part of the step's mean loss
  for (int64_t begin = span.mine_first; begin < span.mine_last; begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, span.mine_last);
    const auto batch = train_.gather(order_.slice(0, begin, end));
    const auto targets = batch.targets.to(device_, /*non_blocking=*/true);
    at::Tensor loss;
    {
      AutocastGuard bf16(config_.precision == "bf16", device_.type());
      const int64_t micro_batch = (state_.epoch_step * world_ + rank_) * config_.accumulate +
                                  (begin - span.mine_first) / batch_size;
      const auto inputs = augment_images(to_device(batch.inputs, device_), config_.augment_crop, config_.augment_flip,
                                         config_.seed, state_.epoch, micro_batch);
      if (config_.is_ranking()) {  // each interaction against an item drawn for this micro-batch
        const auto seed = negatives_seed(config_.seed, state_.epoch, micro_batch);
        loss = one_batch ? ranking_loss(model_, inputs[0], num_items_, seed, at::Reduction::Mean)
                         : ranking_loss(model_, inputs[0], num_items_, seed, at::Reduction::Sum) / denominator;
      } else {
        const auto output = forward(model_, inputs, "training");
        if (state_.steps == 0 && begin == span.mine_first) check_output(output, targets, labels_needed_, config_);
        const auto scale = model_.target_scale();
        loss = one_batch ? batch_loss(output, targets, class_weights_, scale, config_, at::Reduction::Mean)
                         : batch_loss(output, targets, class_weights_, scale, config_, at::Reduction::Sum) / denominator;
        // A model's own per-example regularisation (mf's per-rating penalty), over the same denominator.
        const auto penalty = model_.penalty(inputs);
        if (penalty.defined()) loss = loss + (one_batch ? penalty.mean() : penalty.sum() / denominator);
      }
    }
    step_loss = step_loss.defined() ? step_loss + loss.detach() : loss.detach();
    // The step's last backward starts the gradient all-reduce, bucket by bucket, as it goes.
    if (hooks_.parallel && end == span.mine_last) hooks_.parallel->expect_gradients(trainable_);
    loss.backward();
  }
  if (!step_loss.defined()) step_loss = at::zeros({}, at::TensorOptions().dtype(at::kFloat).device(device_));
  return step_loss;
}

// Data-parallel: the step's loss and any rank's request to stop travel with the gradients, so every rank then
// holds the whole step's loss and takes the same decisions (a non-finite step is skipped everywhere or nowhere;
// a stop ends the run here everywhere, this step dropped, so no rank waits on the others). False: stop.
bool Run::reduce_over_ranks(at::Tensor& step_loss) {
  if (!hooks_.parallel) return true;
  const auto stop = at::full({}, stop_asked_ ? 1.0 : 0.0, step_loss.options());
  const auto summed = hooks_.parallel->sum_gradients(trainable_, at::stack({step_loss, stop}));
  step_loss = summed[0];
  stopped_ = summed[1].item<double>() > 0.0;
  return !stopped_;
}

// The optimizer step (or, for a non-finite loss or gradient, on_nan's choice), the step's bookkeeping, the
// step hook and the periodic checkpoint.
void Run::update(const at::Tensor& step_loss, const StepGeometry::Span& span, double denominator) {
  const auto [loss, finite] = check_finite_(step_loss, params_);
  if (!finite && config_.on_nan == "stop") {
    const auto indices = order_.slice(0, span.first, std::min(span.first + 8, span.last));
    std::ostringstream shown, hint;
    for (int64_t i = 0; i < indices.size(0); ++i) shown << (i ? ", " : "") << indices[i].item<int64_t>();
    // After finite steps it is most often a rate too high for the loss's scale (a regression target in large
    // units under plain SGD): say which rate, and what to change.
    if (state_.steps > 0) {
      hint << ": a loss that grew until it overflowed means a rate too high (lr=" << config_.lr << ", optimizer='"
           << config_.optimizer << "'): a lower lr, optimizer='adamw', or no training settings (the recipe picks "
           << "the rate); on_nan='skip' drops such steps";
    } else {
      hint << "; on_nan='skip' drops such steps";
    }
    TORCH_CHECK_VALUE(false, "non-finite loss or gradient at epoch ", state_.epoch, ", step ", state_.epoch_step + 1,
                      " of ", geometry_.steps_per_epoch, " (run step ", state_.steps + 1, "), training examples [",
                      shown.str(), span.last - span.first > 8 ? ", ..." : "", "] (on_nan='stop')", hint.str());
  }
  if (finite) {
    if (config_.clip_grad_norm > 0.0) {
      torch::nn::utils::clip_grad_norm_(parameters_with_grad(params_), config_.clip_grad_norm);
    }
    optimizer_->step();
    if (ema_) ema_->update();
    state_.loss_sum += loss * denominator;
    state_.weight_sum += denominator;
  } else {
    state_.skipped_steps += 1;
  }
  state_.samples += span.last - span.first;
  state_.steps += 1;
  state_.epoch_step += 1;
  report_step(loss);
  if (config_.checkpoint_every > 0 && state_.steps % config_.checkpoint_every == 0) save("step");
}

void Run::report_step(double loss) {
  if (!hooks_.on_step) return;
  StepInfo info;
  info.epoch = state_.epoch;
  info.step = state_.steps;
  info.epoch_step = state_.epoch_step;
  info.steps_per_epoch = geometry_.steps_per_epoch;
  info.samples = state_.samples;
  info.loss = loss;
  info.lr = current_lr(*optimizer_);
  info.epoch_seconds = epoch_seconds();
  bool stop = false;
  try {
    stop = hooks_.on_step(info);
  } catch (...) {
    // Ctrl-C, SIGTERM or an error in a callback: the step is complete, so save it before leaving (no
    // collective here: other ranks may not be stopping).
    save("interrupt");
    throw;
  }
  if (stop && !hooks_.parallel) stopped_ = true;
  stop_asked_ = stop_asked_ || stop;  // data-parallel: acted on with the next step's gradients, or at epoch end
}

void Run::end_epoch() {
  EpochRecord record;
  record.epoch = state_.epoch;
  record.seconds = epoch_seconds();
  state_.epoch_seconds = record.seconds;
  timing_ = false;
  record.train_loss = state_.loss_sum / std::max(state_.weight_sum, 1e-300);
  record.samples_per_s = static_cast<double>(state_.samples) / std::max(record.seconds, 1e-9);
  record.lr = current_lr(*optimizer_);
  // The ranks' weights are equal by construction, but batch-norm running statistics are each rank's own:
  // rank 0's (those it saves) go to every rank, so that all evaluate, and return, the same model.
  if (hooks_.parallel) {
    const auto buffers = tensors_of(model_.named_buffers());
    if (!buffers.empty()) hooks_.parallel->broadcast(buffers);
  }
  if (val_) metrics_ = validate();
  record.val = val_ ? metrics_.values : std::map<std::string, double>{};
  bool stop = false;
  if (val_ || config_.monitor == "train_loss") {
    const bool improved = track_best(record, config_, state_, stop);
    if (improved && config_.restore_best) {
      AveragedWeights averaged(ema_);  // the weights that were evaluated
      best_weights_ = clone_all(tensors_of(named_state(model_)));
    }
  }
  state_.history.push_back(record);
  // Called for every epoch, the one early stopping ends on too: the progress line and the run's event log show it.
  if (hooks_.on_epoch_end && hooks_.on_epoch_end(record)) stop = true;
  if (hooks_.parallel) stop = hooks_.parallel->sum(stop || stop_asked_ ? 1.0 : 0.0) > 0.0;  // all ranks, or none
  stopped_ = stopped_ || stop;
  // The epoch is complete (a stopped run is complete: its checkpoint says so, and resuming it trains no further).
  state_.epoch = stopped_ ? config_.epochs : state_.epoch + 1;
  state_.epoch_step = 0, state_.loss_sum = 0.0, state_.weight_sum = 0.0, state_.samples = 0;
  state_.epoch_seconds = 0.0;
  save("epoch");
}

// The validation metrics, of the averaged weights when there is an average.
Metrics Run::validate() {
  try {
    AveragedWeights averaged(ema_);
    return evaluate(model_, *val_, config_, hooks_.parallel.get(), hooks_.poll);
  } catch (...) {
    // Ctrl-C during validation: the epoch's steps are done; a resumed run validates this epoch again.
    save("interrupt");
    throw;
  }
}

TrainResult Run::finish() {
  TrainResult result;
  if (config_.restore_best && !best_weights_.empty()) {
    copy_into(tensors_of(named_state(model_)), best_weights_);
    metrics_.values = state_.best_metrics;
  } else if (ema_) {
    ema_->swap();  // the returned model is the one that was evaluated
  }
  if (val_ && (state_.history.empty() || (config_.restore_best && !best_weights_.empty()))) {
    metrics_ = evaluate(model_, *val_, config_, hooks_.parallel.get(), hooks_.poll);  // with its confusion matrix
  }
  result.history = state_.history;
  result.metrics = metrics_;
  result.train_size = subset_.size(0);
  if (config_.is_classification()) result.class_counts = class_counts(train_.targets, subset_);
  result.steps = state_.steps;
  result.skipped_steps = state_.skipped_steps;
  result.seconds = seconds_since(run_start_);
  result.stopped = stopped_;
  result.best_epoch = state_.best_epoch;
  result.best_value = state_.best_value;
  result.param_groups = param_groups_;
  if (hooks_.parallel) {
    result.communication_seconds = hooks_.parallel->communication_seconds();
    result.buckets_reduced = hooks_.parallel->buckets_reduced();
    result.buckets_overlapped = hooks_.parallel->buckets_overlapped();
  }
  return result;
}

double Run::epoch_seconds() const {
  return timing_ ? seconds_before_ + seconds_since(epoch_start_) : state_.epoch_seconds;
}

LoopState Run::checkpoint() {
  LoopState saved = state_;
  saved.epoch_seconds = epoch_seconds();
  {
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    saved.rng_state = generator.get_state();
  }
  saved.optimizer = optimizer_state(*optimizer_, params_, config_.optimizer);
  if (ema_) {
    AveragedWeights averaged(ema_);
    saved.ema = by_name(params_, clone_all(tensors_of(params_)));
  }
  if (!best_weights_.empty()) saved.best = by_name(named_state(model_), best_weights_);
  return saved;
}

// Only rank 0 writes checkpoints; every rank can resume from them.
void Run::save(const char* reason) {
  if (hooks_.on_checkpoint && !config_.checkpoint_dir.empty() && rank_ == 0) hooks_.on_checkpoint(checkpoint(), reason);
}

}  // namespace finetune
