// The loop. Read top to bottom: resolve the run (device, subset, batch size, optimizer), then for each
// epoch train over the sampled subset in a fresh seeded order, validate, and record the epoch.
#include "train.h"

#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include "optim.h"

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

std::vector<at::Tensor> to_device(const std::vector<at::Tensor>& tensors, const at::Device& device) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.to(device, /*non_blocking=*/true));
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

// The model's forward, with the input shapes added to any error: a model that does not fit the data
// (wrong in_features, wrong image size) is the usual cause, and the shapes say so at once.
at::Tensor forward(Model& model, const std::vector<at::Tensor>& inputs, const char* split) {
  try {
    return model.forward(inputs);
  } catch (const std::exception& e) {  // c10::Error, or the TorchScript interpreter's own errors
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    std::ostringstream shapes;
    for (const auto& input : inputs) shapes << (shapes.tellp() ? ", " : "") << input.sizes();
    TORCH_CHECK_VALUE(false, "model forward() failed on ", split, " inputs of shape ", shapes.str(), ": ",
                      c10_error ? c10_error->what_without_backtrace() : e.what());
  }
}

at::Tensor compute_loss(const at::Tensor& output, const at::Tensor& targets, const TrainConfig& config) {
  if (config.is_classification()) return at::cross_entropy_loss(output, targets);
  return at::mse_loss(output.reshape(targets.sizes()), targets.to(output.scalar_type()));
}

std::vector<at::Tensor> parameters_with_grad(const std::vector<at::Tensor>& parameters) {
  std::vector<at::Tensor> out;
  for (const auto& p : parameters) {
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

TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks) {
  validate(config);
  check_dataset(train_data, config, "train");
  if (val_data) check_dataset(*val_data, config, "val");
  const auto device = resolve_device(config.device);
  model.to(device);
  // Dropout and any other randomness inside the model draw from the global generator.
  at::manual_seed(static_cast<uint64_t>(config.seed));

  TrainResult result;
  const auto subset = sample_indices(train_data.targets, config);
  result.train_size = subset.size(0);
  if (config.is_classification()) result.class_counts = class_counts(train_data.targets, subset);
  const int64_t batch_size = config.batch_size == 0 ? result.train_size : std::min(config.batch_size, result.train_size);
  const int64_t steps_per_epoch = (result.train_size + batch_size - 1) / batch_size;
  const int64_t labels_needed = num_labels(train_data, config);

  std::vector<at::Tensor> parameters;
  for (const auto& named : model.named_parameters()) parameters.push_back(named.second);
  TORCH_CHECK_VALUE(!parameters.empty(), "model has no trainable parameters (all have requires_grad=False)");
  auto optimizer = make_optimizer({torch::optim::OptimizerParamGroup(parameters)}, config);

  ModeGuard restore_mode(model, /*training=*/true);
  const auto run_start = Clock::now();
  for (int64_t epoch = 0; epoch < config.epochs && !result.stopped; ++epoch) {
    model.train(true);
    const auto order = epoch_order(subset, config.seed, epoch, config.shuffle);
    auto loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
    int64_t samples = 0;
    const auto epoch_start = Clock::now();
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const int64_t begin = s * batch_size, end = std::min(begin + batch_size, result.train_size);
      const auto batch = train_data.gather(order.slice(0, begin, end));
      const auto inputs = to_device(batch.inputs, device);
      const auto targets = batch.targets.to(device, /*non_blocking=*/true);

      const auto output = forward(model, inputs, "training");
      if (result.steps == 0) check_output(output, targets, labels_needed, config);
      const auto loss = compute_loss(output, targets, config);
      optimizer->zero_grad();
      loss.backward();
      if (hooks.reduce_gradients) hooks.reduce_gradients(parameters_with_grad(parameters));
      optimizer->step();

      const auto detached = loss.detach();
      loss_sum.add_(detached, /*alpha=*/static_cast<double>(end - begin));
      samples += end - begin;
      result.steps += 1;
      if (hooks.on_step) {
        StepInfo info;
        info.epoch = epoch;
        info.step = result.steps;
        info.epoch_step = s + 1;
        info.steps_per_epoch = steps_per_epoch;
        info.samples = samples;
        info.loss = detached;
        info.lr = learning_rate(*optimizer);
        info.epoch_seconds = seconds_since(epoch_start);
        if (hooks.on_step(info)) {
          result.stopped = true;
          break;
        }
      }
    }
    EpochRecord record;
    record.epoch = epoch;
    record.seconds = seconds_since(epoch_start);
    record.train_loss = loss_sum.item<double>() / static_cast<double>(std::max<int64_t>(samples, 1));
    record.samples_per_s = static_cast<double>(samples) / std::max(record.seconds, 1e-9);
    record.lr = learning_rate(*optimizer);
    if (val_data) {
      result.metrics = evaluate(model, *val_data, config);
      record.val = result.metrics.values;
    }
    result.history.push_back(record);
    if (hooks.on_epoch_end && hooks.on_epoch_end(record)) result.stopped = true;
  }
  if (val_data && result.history.empty()) result.metrics = evaluate(model, *val_data, config);
  result.seconds = seconds_since(run_start);
  return result;
}

at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config) {
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
    const int64_t end = std::min(begin + config.eval_batch_size, n);
    std::vector<at::Tensor> batch;
    for (const auto& input : inputs) batch.push_back(input.slice(0, begin, end).to(device));
    outputs.push_back(forward(model, batch, "evaluation").to(at::kCPU));
  }
  return at::cat(outputs);
}

Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config) {
  check_dataset(data, config, "data");
  const auto outputs = predict(model, data.inputs, config);
  check_output(outputs, data.targets, num_labels(data, config), config);
  if (config.is_classification()) return classification_metrics(outputs, data.targets, config.topk);
  return regression_metrics(outputs, data.targets);
}

}  // namespace finetune
