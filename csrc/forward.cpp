// The model's forward pass with readable errors, the output check and the device (see forward.h).
#include "forward.h"

#include <optional>
#include <sstream>

#include <ATen/ATen.h>
#include <torch/cuda.h>

namespace finetune {

namespace {

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

}  // namespace

at::Tensor forward(Model& model, const std::vector<at::Tensor>& inputs, const char* split) {
  try {
    return model.forward(inputs);
  } catch (const ForwardInterrupted&) {
    throw;
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
    } else if (error.find("'indices'") != std::string::npos) {  // an embedding given floats (uint8 ids are cast)
      hint << " (an embedding reads integer ids: pass them as int64, X.astype('int64'); floats and uint8 are read as "
              "features)";
    } else if (integer_input && (error.find("dtype") != std::string::npos || error.find("type") != std::string::npos)) {
      hint << " (integer inputs are passed as they are, for embedding ids; features for a floating-point model "
              "must be floats: X.astype('float32'))";
    }
    TORCH_CHECK_VALUE(false, "model forward() failed on ", split, " inputs of shape ", shapes.str(), " (dtype ",
                      dtypes.str(), "): ", error, hint.str());
  }
}

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

}  // namespace finetune
