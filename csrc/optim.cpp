// The optimizer registry. Each entry maps TrainConfig fields onto LibTorch's option builders, whose
// updates are the same as torch.optim's (tests/test_optim.py checks that against torch.optim).
#include "optim.h"

#include <sstream>

#include <c10/util/Exception.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace finetune {

namespace {

std::unique_ptr<torch::optim::Optimizer> make_sgd(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                  const TrainConfig& c) {
  auto options = torch::optim::SGDOptions(c.lr).momentum(c.momentum).nesterov(c.nesterov).weight_decay(
      c.weight_decay);
  return std::make_unique<torch::optim::SGD>(std::move(groups), options);
}

std::unique_ptr<torch::optim::Optimizer> make_adam(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                   const TrainConfig& c) {
  auto options =
      torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay);
  return std::make_unique<torch::optim::Adam>(std::move(groups), options);
}

std::unique_ptr<torch::optim::Optimizer> make_adamw(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                    const TrainConfig& c) {
  auto options =
      torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weight_decay);
  return std::make_unique<torch::optim::AdamW>(std::move(groups), options);
}

}  // namespace

const std::map<std::string, OptimizerFactory>& optimizer_registry() {
  static const std::map<std::string, OptimizerFactory> registry = {
      {"sgd", make_sgd},
      {"adam", make_adam},
      {"adamw", make_adamw},
  };
  return registry;
}

std::vector<std::string> optimizer_names() {
  std::vector<std::string> names;
  for (const auto& entry : optimizer_registry()) names.push_back(entry.first);
  return names;
}

void check_optimizer_name(const std::string& name) {
  if (optimizer_registry().count(name)) return;
  std::ostringstream known;
  for (const auto& n : optimizer_names()) known << (known.tellp() ? ", " : "") << "'" << n << "'";
  TORCH_CHECK_VALUE(false, "optimizer must be one of [", known.str(), "], got '", name, "'");
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        const TrainConfig& config) {
  check_optimizer_name(config.optimizer);
  return optimizer_registry().at(config.optimizer)(std::move(groups), config);
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

double learning_rate(const torch::optim::Optimizer& optimizer) {
  return optimizer.param_groups().front().options().get_lr();
}

}  // namespace finetune
