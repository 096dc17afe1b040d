// Optimizers by name: a registry of LibTorch optimizers built from a TrainConfig.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "config.h"

namespace finetune {

using OptimizerFactory = std::function<std::unique_ptr<torch::optim::Optimizer>(
    std::vector<torch::optim::OptimizerParamGroup> groups, const TrainConfig& config)>;

// name -> factory; "sgd", "adam", "adamw".
const std::map<std::string, OptimizerFactory>& optimizer_registry();
std::vector<std::string> optimizer_names();

// Throws c10::ValueError listing the known names when `name` is not one of them.
void check_optimizer_name(const std::string& name);

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::optim::OptimizerParamGroup> groups,
                                                        const TrainConfig& config);

// Sets every parameter group's learning rate (the loop's schedule writes through this).
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);
double learning_rate(const torch::optim::Optimizer& optimizer);

}  // namespace finetune
