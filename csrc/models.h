// The models the loop trains: built-in native LibTorch modules ("mlp", "cnn"), TorchScript modules handed
// over from Python and Python modules run eagerly, behind one Model interface.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

namespace torch::jit {
struct Module;
}

namespace finetune {

// A native model takes the dataset's input tensors (most take one) and returns logits or predictions.
class NativeModule : public torch::nn::Module {
 public:
  using torch::nn::Module::Module;
  virtual at::Tensor forward(const std::vector<at::Tensor>& inputs) = 0;
  // A regularisation term per example, added to the training loss (not to evaluation): none by default.
  virtual at::Tensor penalty(const std::vector<at::Tensor>& /*inputs*/) { return {}; }
  // What the model's last linear layer (its head) reads for each example: finetune.embed. Undefined for a
  // model without such a head (a recommender's output is a dot product).
  virtual at::Tensor features(const std::vector<at::Tensor>& /*inputs*/) { return {}; }
  // The per-output scale of the standardised target a regression model's layers fit (mlp's target_scale), or
  // undefined: the training loss's gradient is taken in those units (batch_loss).
  virtual at::Tensor target_scale() const { return {}; }
};

struct MlpOptions {
  int64_t in_features = 0;
  std::vector<int64_t> hidden = {128};
  int64_t num_classes = 0;  // outputs; 1 for a scalar regression
  double dropout = 0.0;
  // Input scaling, read off the training inputs when finetune.train builds "mlp" from data (RealMLP's robust
  // scaling, Holzmueller et al. 2024): x -> (x - center) * scale per feature, then the smooth clip
  // v / sqrt(1 + (v / clip)^2). Empty center/scale: none; clip 0: none.
  std::vector<double> center = {};
  std::vector<double> scale = {};
  double clip = 0.0;
  // Output scaling for regression, read off the training targets when finetune.train builds "mlp" from data:
  // output -> output * target_scale + target_center per output, so the layers fit a standardised target whatever
  // its units (a price in dollars, a fraction). Empty: none.
  std::vector<double> target_center = {};
  std::vector<double> target_scale = {};
  // A linear model beside the layers, averaged with them (recipe.py's tabular rule: on small tables an MLP alone
  // trails logistic regression): "probabilities" averages the two models' class probabilities (the output is the
  // log of the average, a logit whose softmax gives it back), "values" their outputs before the target scaling;
  // "none": no linear model. It reads the inputs standardised, (x - linear_center) * linear_scale; its weights are
  // the buffers linear_weight [num_classes, in_features] and linear_bias [num_classes], and its share of the
  // average the buffer linear_share, all 0 until fit (recipe.py): state the loop does not train.
  std::string linear = "none";
  std::vector<double> linear_center = {};
  std::vector<double> linear_scale = {};
  // Numerical embeddings (Gorishniy et al. 2022, "On Embeddings for Numerical Features"; RealMLP's PBLD, Holzmueller
  // et al. 2024): "periodic" gives each feature v (after the scaling and clip) embedding_size values -- a linear map
  // of cos(2 pi w v + b) at embedding_frequencies learned frequencies w (drawn from N(0, embedding_sigma^2)) and
  // phases b, each feature its own, to embedding_size - 1 values, then v itself -- so the first layer can cut a
  // feature's range into pieces a ReLU stack would need many units for. "none": v alone. Every periodic_* tensor
  // is 2-D or more, so the optimizer's weight decay (which spares 1-D biases) reaches their phases and biases too.
  std::string embedding = "none";
  int64_t embedding_frequencies = 16;
  int64_t embedding_size = 4;
  double embedding_sigma = 0.1;
  // Indicator inputs for point masses (recipe.py's rule 8): for each i, 1 where column indicator_columns[i] of the
  // raw input equals indicator_values[i] (compared in the input's dtype), else 0, appended after the scaled (and
  // embedded) features the layers read and after the standardised inputs the linear model reads. A column whose
  // most common value sits at its edge -- $0 spent, no barium -- holds a state ("none") that the scaling puts next
  // to its smallest amounts, where a tree's split finds it and a first layer barely does. Empty: none.
  std::vector<int64_t> indicator_columns = {};
  std::vector<double> indicator_values = {};
  // Missing values (NaN in the raw input; recipe.py's rule 8): every NaN is filled before the scaling -- with the
  // column's center (its median: 0 once scaled), or 0 where there is no scaling -- and with linear_center (the
  // mean: 0 standardised) for the linear model; each column of missing_columns (those that held a NaN in training)
  // also gets an input, 1 where the row's value was missing, after the point masses' indicators. Empty: none.
  std::vector<int64_t> missing_columns = {};
};

// Conv3x3 + BatchNorm + ReLU + MaxPool2 per entry of `channels`, then dropout, a hidden linear layer and
// the classifier. Input (N, in_channels, height, width).
struct CnnOptions {
  int64_t in_channels = 1;
  int64_t height = 28;
  int64_t width = 28;
  std::vector<int64_t> channels = {16, 32};
  int64_t hidden = 64;
  int64_t num_classes = 10;
  double dropout = 0.25;
};

// Recommendation: inputs are (user, item) id pairs, one (N, 2) int64 tensor or two (N,) tensors; the output
// is the predicted rating (N,).
// "mf": matrix factorisation with biases, rating = mean + b_user + b_item + <p_user, q_item>.
struct MfOptions {
  int64_t num_users = 0;
  int64_t num_items = 0;
  int64_t dim = 32;
  double mean = 0.0;  // the global bias, fixed (the training ratings' mean)
  // The ratings' unit (their standard deviation, read off the training ratings; 1: the ratings' own unit): the
  // model predicts mean + scale x (p_user . q_item + b_user + b_item), so its factors and biases, their penalty and
  // a per-rating rate divided by scale² behave alike on 1-5 stars and on 0-100 points.
  double scale = 1.0;
  // Funk/Koren SVD's regularisation: reg x (|p_user|² + |q_item|² + b_user² + b_item²) added to each rating's
  // squared error in training (both in units of scale), so each user's and item's factors and biases are
  // penalised per rating seen (unlike weight decay, which shrinks every row every step). 0 = none.
  double reg = 0.1;
};

// "ncf": neural collaborative filtering, an MLP over the concatenated user and item embeddings.
struct NcfOptions {
  int64_t num_users = 0;
  int64_t num_items = 0;
  int64_t dim = 32;
  std::vector<int64_t> hidden = {64, 32};
  double dropout = 0.0;
  double mean = 0.0;
};

// The built-in models. Their initial weights are drawn from the global generator, which LibTorch seeds at random
// in each process: call at::manual_seed first for the same weights every run (finetune.train seeds it from its
// `seed` before it builds a model by name; finetune_example from --seed).
std::shared_ptr<NativeModule> make_mlp(const MlpOptions& options);
std::shared_ptr<NativeModule> make_mf(const MfOptions& options);
std::shared_ptr<NativeModule> make_ncf(const NcfOptions& options);
std::shared_ptr<NativeModule> make_cnn(const CnnOptions& options);

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// An error raised around a model's forward pass rather than by the model (Ctrl-C while a Python forward ran):
// forward() passes it on as it is instead of describing it as the model's failure.
class ForwardInterrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A module whose forward pass runs outside C++, as its author wrote it: a Python nn.Module called eagerly
// (runner="python"; bindings.cpp implements it, taking the GIL for each call). Everything else -- sampling,
// loss, backward, the optimizer -- stays in the loop; the parameters are the module's own tensors.
class EagerModule {
 public:
  virtual ~EagerModule() = default;
  virtual at::Tensor forward(const std::vector<at::Tensor>& inputs) = 0;
  virtual NamedTensors named_parameters() const = 0;  // each tensor once (tied weights under their first name)
  virtual NamedTensors named_buffers() const = 0;
  virtual void train(bool on) = 0;
  virtual bool is_training() const = 0;
  virtual void keep_frozen_batchnorm_in_eval(const std::function<bool(const std::string&)>& is_frozen) = 0;
  virtual void to(const at::Device& device) = 0;
};

// What the loop sees of a model. A TorchScript module that has a `forward_train` method (a graph traced in
// training mode; models.py traces modules that cannot be scripted in both modes) runs it while training
// and `forward` otherwise. Parameters are the model's own tensors: training updates them in place,
// so a Python nn.Module that was scripted to make a Model sees every update.
class Model {
 public:
  explicit Model(std::shared_ptr<NativeModule> native);
  explicit Model(const torch::jit::Module& script);
  explicit Model(std::shared_ptr<EagerModule> eager);

  at::Tensor forward(const std::vector<at::Tensor>& inputs);
  // The model's per-example training penalty (NativeModule::penalty), undefined when it has none.
  at::Tensor penalty(const std::vector<at::Tensor>& inputs);
  // NativeModule::target_scale, undefined for a model that is not native.
  at::Tensor target_scale() const;
  NamedTensors named_parameters() const;  // all of them, trainable or not
  NamedTensors named_buffers() const;
  void train(bool on);
  bool is_training() const;
  // Puts every batch-norm layer whose parameters are all frozen into eval mode, so that its running
  // statistics stay as pretrained (a frozen layer must not drift through its buffers either). Call after
  // train(true).
  void keep_frozen_batchnorm_in_eval(const std::function<bool(const std::string&)>& is_frozen);
  void to(const at::Device& device);

 private:
  std::shared_ptr<NativeModule> native_;
  std::shared_ptr<torch::jit::Module> script_;
  std::shared_ptr<EagerModule> eager_;
};

}  // namespace finetune
