// The learning-rate range test (see lr_finder.h).
#include "lr_finder.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <torch/nn/utils/clip_grad.h>

#include "forward.h"
#include "freezing.h"
#include "guards.h"
#include "loss.h"
#include "ranking.h"
#include "optim.h"
#include "patterns.h"
#include "sampling.h"
#include "tensor_lists.h"

namespace finetune {

namespace {

// The rate where the smoothed loss falls fastest against log(lr), skipping the noisy ends.
double steepest_descent(const std::vector<double>& lrs, const std::vector<double>& losses, double start_lr) {
  const size_t n = losses.size();
  const size_t skip_start = std::min<size_t>(n / 10, 10), skip_end = std::min<size_t>(n / 20 + 1, 5);
  double steepest = std::numeric_limits<double>::infinity();
  double suggestion = lrs.empty() ? start_lr : lrs[n / 2];
  for (size_t i = skip_start + 1; i + skip_end < n; ++i) {
    const double slope = (losses[i] - losses[i - 1]) / std::log(lrs[i] / lrs[i - 1]);
    if (slope < steepest) {
      steepest = slope;
      suggestion = lrs[i];
    }
  }
  return suggestion;
}

// Each step's examples: consecutive batches of seeded epoch orders, a new order when one runs out. Computed before
// the test, so that a streamed dataset reads them ahead. `epochs[t]` counts the orders begun by step t.
struct RangeTestBatches {
  std::vector<at::Tensor> batches;
  std::vector<int64_t> epochs;
};

RangeTestBatches range_test_batches(const at::Tensor& subset, const TrainConfig& config, int64_t batch_size,
                                    int64_t num_steps) {
  RangeTestBatches out;
  at::Tensor order;
  for (int64_t t = 0, position = 0, epoch = 0; t < num_steps; ++t, position += batch_size) {
    if (!order.defined() || position >= order.size(0)) {
      order = epoch_order(subset, config.seed, epoch++, config.shuffle);
      position = 0;
    }
    out.batches.push_back(order.slice(0, position, std::min(position + batch_size, order.size(0))));
    out.epochs.push_back(epoch);
  }
  return out;
}

}  // namespace

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
  const auto saved = clone_all(tensors_of(named_state(model)));
  // The weights as they were, however the test ends (Ctrl-C or an error in a step included).
  struct Restore {
    Model& model;
    const std::vector<at::Tensor>& saved;
    ~Restore() {
      try {
        copy_into(tensors_of(named_state(model)), saved);
      } catch (...) {
      }
    }
  } restore{model, saved};

  const auto params = model.named_parameters();
  check_patterns(params, config);
  const Freezing freezing(params, config);  // as train's first epoch
  const auto groups = resolve_param_groups(params, [&](const std::string& n) { return !freezing.is_frozen(n); }, config);
  TORCH_CHECK_VALUE(!groups.empty(), "model has no trainable parameters (all are frozen or have requires_grad=False)");
  auto optimizer = make_optimizer(groups, config);
  at::Tensor class_weights;
  if (!config.class_weights.empty()) class_weights = at::tensor(config.class_weights, at::kDouble).to(at::kFloat).to(device);

  const auto subset = sample_indices(data.targets, config);
  const int64_t batch_size = config.batch_size == 0 ? subset.size(0) : std::min(config.batch_size, subset.size(0));
  const int64_t labels_needed = num_labels(data, config);
  const int64_t num_items = config.is_ranking() ? ranking_items(data, "train") : 0;
  ModeGuard train_mode(model, /*training=*/true);
  LrFinderResult result;
  double average = 0.0, best = std::numeric_limits<double>::infinity();
  // The first steps' smoothed loss averages a few batches only: one easy batch there is no minimum to diverge
  // from (a fitted model's first batch at 0.12, the next ones at 0.5, read as a blow-up after 2 steps).
  const int64_t settle = std::min<int64_t>(num_steps / 10, 10);
  const auto steps = range_test_batches(subset, config, batch_size, num_steps);
  data.plan(steps.batches, /*epoch=*/0);  // training reads: a dataset augments them
  for (int64_t t = 0; t < num_steps; ++t) {
    const int64_t epoch = steps.epochs[t];
    const double lr = start_lr * std::pow(end_lr / start_lr, static_cast<double>(t) / static_cast<double>(num_steps - 1));
    for (size_t g = 0; g < optimizer->param_groups().size(); ++g) {
      optimizer->param_groups()[g].options().set_lr(lr * groups[g].lr_multiplier);
    }
    const auto batch = data.gather(steps.batches[t]);
    const auto targets = batch.targets.to(device);
    optimizer->zero_grad();
    at::Tensor loss;
    {
      AutocastGuard bf16(config.precision == "bf16", device.type());
      const auto inputs = to_device(batch.inputs, device);
      if (config.is_ranking()) {
        loss = ranking_loss(model, inputs[0], num_items, negatives_seed(config.seed, epoch, t), at::Reduction::Mean);
      } else {
        const auto output = forward(model, inputs, "training");
        if (t == 0) check_output(output, targets, labels_needed, config);
        loss = batch_loss(output, targets, class_weights, model.target_scale(), config, at::Reduction::Mean);  // as train's
        const auto penalty = model.penalty(inputs);
        if (penalty.defined()) loss = loss + penalty.mean();
      }
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
    if (!std::isfinite(smoothed) || (t > settle && smoothed > diverge_factor * best)) {
      result.diverged = true;
      break;
    }
    if (t >= settle) best = std::min(best, smoothed);
  }
  result.suggestion = steepest_descent(result.lrs, result.losses, start_lr);
  return result;
}

}  // namespace finetune
