// The model's forward pass with readable errors, the check that its output fits the task, and the device.
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"
#include "dataset.h"
#include "models.h"

namespace finetune {

// model.forward(inputs); any error becomes one line with the input shapes and dtypes (a model that does not
// fit the data is the usual cause) and, where it can tell, what to do. `split` names the inputs
// ("training", "evaluation").
at::Tensor forward(Model& model, const std::vector<at::Tensor>& inputs, const char* split);

// The model's output must fit the task: (batch, >= num_labels) for classification, one value per target for
// regression. A ValueError with the shapes otherwise (a wrong head is the most common fine-tuning mistake).
void check_output(const at::Tensor& output, const at::Tensor& targets, int64_t num_labels, const TrainConfig& config);

// The classes the labels need (largest label + 1); 0 for regression.
int64_t num_labels(const Dataset& data, const TrainConfig& config);

// Parses config.device, checking that the device exists here.
at::Device resolve_device(const std::string& device);

}  // namespace finetune
