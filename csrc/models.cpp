// Native models and the Model adapter over native and TorchScript modules.
#include "models.h"

#include <cmath>
#include <set>

#include <c10/util/Exception.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/modules/activation.h>

namespace finetune {

namespace {

class Mlp : public NativeModule {
 public:
  explicit Mlp(const MlpOptions& o) {
    TORCH_CHECK_VALUE(o.in_features >= 1, "mlp in_features must be >= 1, got ", o.in_features);
    TORCH_CHECK_VALUE(o.num_classes >= 1, "mlp num_classes must be >= 1, got ", o.num_classes);
    TORCH_CHECK_VALUE(o.dropout >= 0.0 && o.dropout < 1.0, "mlp dropout must be in [0, 1), got ", o.dropout);
    TORCH_CHECK_VALUE(o.center.size() == o.scale.size() &&
                          (o.center.empty() || static_cast<int64_t>(o.center.size()) == o.in_features),
                      "mlp center and scale must both be empty or both hold in_features = ", o.in_features,
                      " values, got ", o.center.size(), " and ", o.scale.size());
    TORCH_CHECK_VALUE(std::isfinite(o.clip) && o.clip >= 0.0, "mlp clip must be >= 0 (0: none), got ", o.clip);
    for (size_t i = 0; i < o.center.size(); ++i) {  // finite as float32, the buffers' dtype
      TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(o.center[i])), "mlp center[", i,
                        "] must be a finite float32, got ", o.center[i]);
      TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(o.scale[i])), "mlp scale[", i,
                        "] must be a finite float32, got ", o.scale[i]);
    }
    if (!o.center.empty()) {
      center_ = register_buffer("center", at::tensor(o.center, at::kFloat));
      scale_ = register_buffer("scale", at::tensor(o.scale, at::kFloat));
    }
    TORCH_CHECK_VALUE(o.target_center.size() == o.target_scale.size() &&
                          (o.target_center.empty() || static_cast<int64_t>(o.target_center.size()) == o.num_classes),
                      "mlp target_center and target_scale must both be empty or both hold num_classes = ",
                      o.num_classes, " values, got ", o.target_center.size(), " and ", o.target_scale.size());
    for (size_t i = 0; i < o.target_center.size(); ++i) {
      TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(o.target_center[i])), "mlp target_center[", i,
                        "] must be a finite float32, got ", o.target_center[i]);
      TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(o.target_scale[i])) && o.target_scale[i] > 0.0,
                        "mlp target_scale[", i, "] must be a positive finite float32, got ", o.target_scale[i]);
    }
    if (!o.target_center.empty()) {
      target_center_ = register_buffer("target_center", at::tensor(o.target_center, at::kFloat));
      target_scale_ = register_buffer("target_scale", at::tensor(o.target_scale, at::kFloat));
    }
    TORCH_CHECK_VALUE(o.indicator_columns.size() == o.indicator_values.size(), "mlp indicator_columns and "
                      "indicator_values must hold as many values, got ", o.indicator_columns.size(), " and ",
                      o.indicator_values.size());
    for (size_t i = 0; i < o.indicator_columns.size(); ++i) {
      TORCH_CHECK_VALUE(o.indicator_columns[i] >= 0 && o.indicator_columns[i] < o.in_features, "mlp "
                        "indicator_columns[", i, "] must be a column in [0, in_features = ", o.in_features, "), got ",
                        o.indicator_columns[i]);
      TORCH_CHECK_VALUE(std::isfinite(o.indicator_values[i]), "mlp indicator_values[", i, "] must be finite, got ",
                        o.indicator_values[i]);
    }
    indicator_columns_ = o.indicator_columns;
    indicator_values_ = o.indicator_values;
    for (size_t i = 0; i < o.missing_columns.size(); ++i)
      TORCH_CHECK_VALUE(o.missing_columns[i] >= 0 && o.missing_columns[i] < o.in_features, "mlp missing_columns[", i,
                        "] must be a column in [0, in_features = ", o.in_features, "), got ", o.missing_columns[i]);
    missing_columns_ = o.missing_columns;
    const int64_t flags = static_cast<int64_t>(o.indicator_columns.size() + o.missing_columns.size());
    TORCH_CHECK_VALUE(o.linear == "none" || o.linear == "probabilities" || o.linear == "values",
                      "mlp linear must be 'none', 'probabilities' or 'values', got '", o.linear, "'");
    TORCH_CHECK_VALUE(o.linear_center.size() == o.linear_scale.size() &&
                          static_cast<int64_t>(o.linear_center.size()) == (o.linear == "none" ? 0 : o.in_features),
                      "mlp linear_center and linear_scale must hold in_features = ", o.in_features, " values each "
                      "with linear='", o.linear, "' (none with 'none'), got ", o.linear_center.size(), " and ",
                      o.linear_scale.size());
    for (size_t i = 0; i < o.linear_center.size(); ++i) {
      TORCH_CHECK_VALUE(std::isfinite(static_cast<float>(o.linear_center[i])) &&
                            std::isfinite(static_cast<float>(o.linear_scale[i])),
                        "mlp linear_center[", i, "] and linear_scale[", i, "] must be finite float32s, got ",
                        o.linear_center[i], " and ", o.linear_scale[i]);
    }
    linear_values_ = o.linear == "values";
    if (o.linear != "none") {
      linear_center_ = register_buffer("linear_center", at::tensor(o.linear_center, at::kFloat));
      linear_scale_ = register_buffer("linear_scale", at::tensor(o.linear_scale, at::kFloat));
      linear_weight_ = register_buffer("linear_weight", at::zeros({o.num_classes, o.in_features + flags}));
      linear_bias_ = register_buffer("linear_bias", at::zeros({o.num_classes}));
      linear_share_ = register_buffer("linear_share", at::zeros({}));
    }
    TORCH_CHECK_VALUE(o.embedding == "none" || o.embedding == "periodic",
                      "mlp embedding must be 'none' or 'periodic', got '", o.embedding, "'");
    TORCH_CHECK_VALUE(o.embedding_frequencies >= 1, "mlp embedding_frequencies must be >= 1, got ",
                      o.embedding_frequencies);
    TORCH_CHECK_VALUE(o.embedding_size >= 2, "mlp embedding_size must be >= 2 (the feature itself and at least one "
                      "learned value), got ", o.embedding_size);
    TORCH_CHECK_VALUE(std::isfinite(o.embedding_sigma) && o.embedding_sigma > 0.0,
                      "mlp embedding_sigma must be a positive finite number, got ", o.embedding_sigma);
    clip_ = o.clip;
    in_features_ = o.in_features;
    int64_t width = o.in_features;
    if (o.embedding == "periodic") {  // RealMLP's initialisation (pytabkit's realmlp/model.py)
      const int64_t f = o.in_features, k = o.embedding_frequencies, d = o.embedding_size - 1;
      const double bound = 1.0 / std::sqrt(static_cast<double>(k));
      periodic_frequency_ = register_parameter("periodic_frequency", o.embedding_sigma * at::randn({f, k}));
      periodic_phase_ = register_parameter("periodic_phase", M_PI * (2.0 * at::rand({f, k}) - 1.0));
      periodic_weight_ = register_parameter("periodic_weight", bound * (2.0 * at::rand({f, k, d}) - 1.0));
      periodic_bias_ = register_parameter("periodic_bias", bound * (2.0 * at::rand({f, d}) - 1.0));
      width = f * o.embedding_size;
    }
    width += flags;  // the point masses' and missing values' indicators
    for (const int64_t h : o.hidden) {
      TORCH_CHECK_VALUE(h >= 1, "mlp hidden sizes must be >= 1, got ", h);
      layers_->push_back(torch::nn::Linear(width, h));
      layers_->push_back(torch::nn::ReLU());
      if (o.dropout > 0.0) layers_->push_back(torch::nn::Dropout(o.dropout));
      width = h;
    }
    layers_->push_back(torch::nn::Linear(width, o.num_classes));
    register_module("layers", layers_);
  }

  at::Tensor forward(const std::vector<at::Tensor>& inputs) override {
    const at::Tensor raw = checked_input(inputs);
    const at::Tensor flags = indicators(raw);  // read by the layers and the linear model: computed once
    at::Tensor out = layers_->ptr<torch::nn::LinearImpl>(layers_->size() - 1)->forward(hidden(raw, flags));
    if (linear_share_.defined()) out = with_linear(out, raw, flags);
    if (target_center_.defined()) out = out * target_scale_ + target_center_;
    return out;
  }

  // The layers' output averaged with the linear model's, its share linear_share (0: the layers' output as it is).
  // The share stays a tensor: reading it on the host (item()) would wait for the device at every forward on CUDA.
  // On the CPU that read costs nothing, and a share of 0 (the recipe's choice on most larger tables) skips the
  // linear model.
  at::Tensor with_linear(const at::Tensor& out, const at::Tensor& x, const at::Tensor& flags) const {
    if (linear_share_.is_cpu() && linear_share_.item<double>() == 0.0) return out;
    const at::Tensor& share = linear_share_;  // 0-dim: the result keeps out's dtype
    at::Tensor standardised = (at::where(x.isnan(), linear_center_, x) - linear_center_) * linear_scale_;
    if (flags.defined()) standardised = at::cat({standardised, flags.to(standardised.scalar_type())}, 1);
    const at::Tensor linear = at::addmm(linear_bias_, standardised, linear_weight_.t()).to(out.scalar_type());
    if (linear_values_) return out * (1.0 - share) + linear * share;
    // log((1 - s) softmax(out) + s softmax(linear)), in log space: exact at s = 0 and 1 (log 0 = -inf drops a term)
    return at::logsumexp(at::stack({at::log_softmax(out, 1) + at::log1p(-share),
                                    at::log_softmax(linear, 1) + at::log(share)}),
                         0);
  }

  at::Tensor features(const std::vector<at::Tensor>& inputs) override {
    const at::Tensor raw = checked_input(inputs);
    return hidden(raw, indicators(raw));
  }

  // The one input tensor as (N, in_features) raw values.
  at::Tensor checked_input(const std::vector<at::Tensor>& inputs) const {
    TORCH_CHECK_VALUE(inputs.size() == 1, "mlp takes one input tensor, got ", inputs.size());
    const at::Tensor raw = inputs[0].flatten(1);
    TORCH_CHECK_VALUE(raw.size(1) == in_features_, "mlp takes ", in_features_, " features per example "
                      "(in_features), got ", raw.size(1));
    return raw;
  }

  // The last hidden layer's activations (what the head reads) for raw inputs and their indicator columns.
  at::Tensor hidden(const at::Tensor& raw, const at::Tensor& flags) {
    // A missing value (NaN) becomes the column's center, 0 once scaled: where most rows sit, no signal of its own.
    at::Tensor x = at::where(raw.isnan(), center_.defined() ? center_ : at::zeros({}, raw.options()), raw);
    if (center_.defined()) x = (x - center_) * scale_;
    // Smooth clipping, clip * u / sqrt(1 + u^2) for u = v / clip: near-identity for |v| << clip, bounded by clip,
    // so an outlier cannot dominate a step (hypot, not u^2, so that |u| > 1e19 still gives +-clip).
    if (clip_ > 0.0) {
      const at::Tensor u = x / clip_;
      x = clip_ * u / at::hypot(at::ones_like(u), u);
    }
    if (periodic_frequency_.defined()) x = periodic(x);
    if (flags.defined()) x = at::cat({x, flags.to(x.scalar_type())}, 1);
    auto layer = layers_->begin();  // every layer but the head, the last
    for (size_t i = 0; i + 1 < layers_->size(); ++i, ++layer) x = layer->forward(x);
    return x;
  }

  at::Tensor target_scale() const override { return target_scale_; }

  // (N, in_features) raw inputs -> (N, point masses + missing columns): 1 where a column holds its point mass,
  // then 1 where a column's value is missing; undefined where the model has neither. A column at a time: there
  // are a few, and scalars need no tensor moved to the input's device.
  at::Tensor indicators(const at::Tensor& raw) const {
    if (indicator_columns_.empty() && missing_columns_.empty()) return {};
    std::vector<at::Tensor> columns;
    for (size_t i = 0; i < indicator_columns_.size(); ++i)
      columns.push_back(raw.select(1, indicator_columns_[i]).eq(indicator_values_[i]));
    for (const int64_t column : missing_columns_) columns.push_back(raw.select(1, column).isnan());
    return at::stack(columns, 1);
  }

  // (N, F) -> (N, F * embedding_size): per feature, its embedding_size - 1 learned values, all features' in turn,
  // then the F features themselves (RealMLP's order).
  at::Tensor periodic(const at::Tensor& x) const {
    const at::Tensor waves = at::cos(2.0 * M_PI * x.unsqueeze(2) * periodic_frequency_ + periodic_phase_);  // N F K
    const at::Tensor values = at::bmm(waves.transpose(0, 1), periodic_weight_).transpose(0, 1) + periodic_bias_;
    return at::cat({values.flatten(1), x}, 1);
  }

 private:
  torch::nn::Sequential layers_;
  at::Tensor periodic_frequency_, periodic_phase_, periodic_weight_, periodic_bias_;
  at::Tensor center_, scale_, target_center_, target_scale_;
  at::Tensor linear_center_, linear_scale_, linear_weight_, linear_bias_, linear_share_;
  bool linear_values_ = false;
  double clip_ = 0.0;
  int64_t in_features_ = 0;
  std::vector<int64_t> indicator_columns_;
  std::vector<double> indicator_values_;
  std::vector<int64_t> missing_columns_;
};

class Cnn : public NativeModule {
 public:
  explicit Cnn(const CnnOptions& o) {
    TORCH_CHECK_VALUE(o.in_channels >= 1, "cnn in_channels must be >= 1, got ", o.in_channels);
    TORCH_CHECK_VALUE(o.num_classes >= 1, "cnn num_classes must be >= 1, got ", o.num_classes);
    TORCH_CHECK_VALUE(o.dropout >= 0.0 && o.dropout < 1.0, "cnn dropout must be in [0, 1), got ", o.dropout);
    int64_t channels = o.in_channels, height = o.height, width = o.width;
    for (const int64_t out : o.channels) {
      TORCH_CHECK_VALUE(out >= 1, "cnn channels must be >= 1, got ", out);
      TORCH_CHECK_VALUE(height >= 2 && width >= 2, "cnn input ", o.height, "x", o.width, " is too small for ",
                        o.channels.size(), " pooling stages");
      features_->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, out, 3).padding(1).bias(false)));
      features_->push_back(torch::nn::BatchNorm2d(out));
      features_->push_back(torch::nn::ReLU());
      features_->push_back(torch::nn::MaxPool2d(2));
      channels = out, height /= 2, width /= 2;
    }
    classifier_->push_back(torch::nn::Dropout(o.dropout));
    classifier_->push_back(torch::nn::Linear(channels * height * width, o.hidden));
    classifier_->push_back(torch::nn::ReLU());
    classifier_->push_back(torch::nn::Linear(o.hidden, o.num_classes));
    register_module("features", features_);
    register_module("classifier", classifier_);
  }

  at::Tensor forward(const std::vector<at::Tensor>& inputs) override {
    return classifier_->ptr<torch::nn::LinearImpl>(classifier_->size() - 1)->forward(features(inputs));
  }

  at::Tensor features(const std::vector<at::Tensor>& inputs) override {
    TORCH_CHECK_VALUE(inputs.size() == 1, "cnn takes one input tensor, got ", inputs.size());
    at::Tensor x = features_->forward(inputs[0]).flatten(1);
    auto layer = classifier_->begin();  // dropout, hidden layer, ReLU: every layer but the head
    for (size_t i = 0; i + 1 < classifier_->size(); ++i, ++layer) x = layer->forward(x);
    return x;
  }

 private:
  torch::nn::Sequential features_;
  torch::nn::Sequential classifier_;
};

// The (user, item) columns of a recommender's input, checked against the table sizes.
std::pair<at::Tensor, at::Tensor> user_item(const std::vector<at::Tensor>& inputs, int64_t users, int64_t items,
                                            const char* model) {
  at::Tensor user, item;
  if (inputs.size() == 1) {
    TORCH_CHECK_VALUE(inputs[0].dim() == 2 && inputs[0].size(1) == 2, model,
                      " takes (user, item) pairs shaped (N, 2), got shape ", inputs[0].sizes());
    user = inputs[0].select(1, 0), item = inputs[0].select(1, 1);
  } else {
    TORCH_CHECK_VALUE(inputs.size() == 2, model, " takes (user, item) ids, got ", inputs.size(), " inputs");
    user = inputs[0], item = inputs[1];
  }
  TORCH_CHECK_VALUE(!at::isFloatingType(user.scalar_type()) && !at::isFloatingType(item.scalar_type()), model,
                    " takes integer user and item ids, got ", user.scalar_type());
  user = user.to(at::kLong), item = item.to(at::kLong);
  const int64_t max_user = user.numel() ? user.max().item<int64_t>() : 0;
  const int64_t max_item = item.numel() ? item.max().item<int64_t>() : 0;
  TORCH_CHECK_VALUE(max_user < users && (!user.numel() || user.min().item<int64_t>() >= 0), "user id ", max_user,
                    " is outside the ", users, " users the model was built for (ids unseen at training time: "
                    "build it with num_users covering every id, e.g. finetune.train(..., num_users=N))");
  TORCH_CHECK_VALUE(max_item < items && (!item.numel() || item.min().item<int64_t>() >= 0), "item id ", max_item,
                    " is outside the ", items, " items the model was built for (ids unseen at training time: "
                    "build it with num_items covering every id, e.g. finetune.train(..., num_items=N))");
  return {user, item};
}

// What "mf" and "ncf" share: the size checks, the user and item factor tables and the id checks.
class Recommender : public NativeModule {
 protected:
  Recommender(const char* name, int64_t users, int64_t items, int64_t dim) : name_(name), users_(users), items_(items) {
    TORCH_CHECK_VALUE(users >= 1 && items >= 1 && dim >= 1, name, " needs num_users, num_items and dim >= 1, got ",
                      users, ", ", items, ", ", dim);
    user_ = register_module("user", torch::nn::Embedding(users, dim));
    item_ = register_module("item", torch::nn::Embedding(items, dim));
  }
  // Small random factors. Called last by the subclass, after its own layers drew their initial weights, so
  // that a seed gives the same model as before this class existed.
  void init_factors() {
    at::NoGradGuard no_grad;
    user_->weight.normal_(0.0, 0.05);
    item_->weight.normal_(0.0, 0.05);
  }
  std::pair<at::Tensor, at::Tensor> ids(const std::vector<at::Tensor>& inputs) const {
    return user_item(inputs, users_, items_, name_);
  }

  torch::nn::Embedding user_{nullptr}, item_{nullptr};

 private:
  const char* name_;
  int64_t users_, items_;
};

class Mf : public Recommender {
 public:
  explicit Mf(const MfOptions& o)
      : Recommender("mf", o.num_users, o.num_items, o.dim), reg_(o.reg), scale_(o.scale) {
    TORCH_CHECK_VALUE(o.reg >= 0.0 && std::isfinite(o.reg), "model 'mf' option reg must be a finite number >= 0, got ",
                      o.reg);
    TORCH_CHECK_VALUE(o.scale > 0.0 && std::isfinite(o.scale), "model 'mf' option scale must be a finite number > 0, "
                      "got ", o.scale);
    user_bias_ = register_module("user_bias", torch::nn::Embedding(o.num_users, 1));
    item_bias_ = register_module("item_bias", torch::nn::Embedding(o.num_items, 1));
    // The global mean is fixed (a buffer), as in Funk/Koren SVD: trained, it would move with every step's mean
    // error, at a rate meant for one user's or item's factors.
    global_ = register_buffer("global_bias", at::full({1}, o.mean));
    init_factors();
    at::NoGradGuard no_grad;  // zero biases: the first prediction is the mean
    user_bias_->weight.zero_();
    item_bias_->weight.zero_();
  }

  at::Tensor forward(const std::vector<at::Tensor>& inputs) override {
    const auto [user, item] = ids(inputs);
    const at::Tensor f = (user_->forward(user) * item_->forward(item)).sum(1) + user_bias_->forward(user).squeeze(1) +
                         item_bias_->forward(item).squeeze(1);
    return (scale_ == 1.0 ? f : f * scale_) + global_;
  }

  // In the squared error's units: scale² x reg x |...|², so that the loss is scale² x the loss of ratings divided
  // by scale, penalty included (the recipe divides its rate by scale²).
  at::Tensor penalty(const std::vector<at::Tensor>& inputs) override {
    if (reg_ == 0.0) return {};
    const auto [user, item] = ids(inputs);
    return reg_ * scale_ * scale_ *
           (user_->forward(user).pow(2).sum(1) + item_->forward(item).pow(2).sum(1) +
            user_bias_->forward(user).squeeze(1).pow(2) + item_bias_->forward(item).squeeze(1).pow(2));
  }

 private:
  torch::nn::Embedding user_bias_{nullptr}, item_bias_{nullptr};
  at::Tensor global_;
  double reg_, scale_;
};

class Ncf : public Recommender {
 public:
  explicit Ncf(const NcfOptions& o) : Recommender("ncf", o.num_users, o.num_items, o.dim) {
    MlpOptions mlp;
    mlp.in_features = 2 * o.dim;
    mlp.hidden = o.hidden;
    mlp.num_classes = 1;
    mlp.dropout = o.dropout;
    head_ = register_module("mlp", make_mlp(mlp));
    global_ = register_parameter("global_bias", at::full({1}, o.mean));
    init_factors();
  }

  at::Tensor forward(const std::vector<at::Tensor>& inputs) override {
    const auto [user, item] = ids(inputs);
    return head_->forward({at::cat({user_->forward(user), item_->forward(item)}, 1)}).squeeze(1) + global_;
  }

 private:
  std::shared_ptr<NativeModule> head_;
  at::Tensor global_;
};

}  // namespace

std::shared_ptr<NativeModule> make_mf(const MfOptions& options) { return std::make_shared<Mf>(options); }
std::shared_ptr<NativeModule> make_ncf(const NcfOptions& options) { return std::make_shared<Ncf>(options); }

std::shared_ptr<NativeModule> make_mlp(const MlpOptions& options) { return std::make_shared<Mlp>(options); }
std::shared_ptr<NativeModule> make_cnn(const CnnOptions& options) { return std::make_shared<Cnn>(options); }

Model::Model(std::shared_ptr<NativeModule> native) : native_(std::move(native)) {
  TORCH_CHECK_VALUE(native_ != nullptr, "model is empty");
}

Model::Model(const torch::jit::Module& script) : script_(std::make_shared<torch::jit::Module>(script)) {
  TORCH_CHECK_VALUE(script_->find_method("forward").has_value(), "model has no forward() method");
}

Model::Model(std::shared_ptr<EagerModule> eager) : eager_(std::move(eager)) {
  TORCH_CHECK_VALUE(eager_ != nullptr, "model is empty");
}

at::Tensor Model::penalty(const std::vector<at::Tensor>& inputs) {
  return native_ ? native_->penalty(inputs) : at::Tensor();
}

at::Tensor Model::target_scale() const { return native_ ? native_->target_scale() : at::Tensor(); }

at::Tensor Model::forward(const std::vector<at::Tensor>& inputs) {
  if (native_) return native_->forward(inputs);
  if (eager_) return eager_->forward(inputs);
  // Run the module's graph as written, without the executor's profiling and autodiff-subgraph passes: on
  // CPU they made a small CNN ~12% slower than eager PyTorch (benchmarks/compare.py), while the plain
  // graph runs each op through the same kernels and autograd as eager. The setting is thread-local.
  torch::jit::GraphOptimizerEnabledGuard plain_graph(/*state=*/false);
  std::vector<c10::IValue> args(inputs.begin(), inputs.end());
  // A traced module keeps the mode it was traced in: one traced in both carries the training-mode graph
  // (dropout on, batch norm on batch statistics) as forward_train.
  const auto train_graph = script_->is_training() ? script_->find_method("forward_train") : std::nullopt;
  const auto output = train_graph ? (*train_graph)(std::move(args)) : script_->forward(std::move(args));
  TORCH_CHECK_VALUE(output.isTensor(), "model forward() must return a tensor, got ", output.tagKind());
  return output.toTensor();
}

namespace {

// A tensor registered under several names (tied weights, e.g. an embedding shared with the output layer)
// is listed once, under its first name, as torch's named_parameters() does: the optimizer must step it once.
void add_once(NamedTensors& out, std::set<const c10::TensorImpl*>& seen, const std::string& name, const at::Tensor& t) {
  if (seen.insert(t.unsafeGetTensorImpl()).second) out.emplace_back(name, t);
}

}  // namespace

NamedTensors Model::named_parameters() const {
  if (eager_) return eager_->named_parameters();
  NamedTensors out;
  std::set<const c10::TensorImpl*> seen;
  if (native_) {
    for (const auto& item : native_->named_parameters(/*recurse=*/true)) add_once(out, seen, item.key(), item.value());
  } else {
    for (const auto& item : script_->named_parameters(/*recurse=*/true)) add_once(out, seen, item.name, item.value);
  }
  return out;
}

NamedTensors Model::named_buffers() const {
  if (eager_) return eager_->named_buffers();
  NamedTensors out;
  std::set<const c10::TensorImpl*> seen;
  if (native_) {
    for (const auto& item : native_->named_buffers(/*recurse=*/true)) add_once(out, seen, item.key(), item.value());
  } else {
    for (const auto& item : script_->named_buffers(/*recurse=*/true)) add_once(out, seen, item.name, item.value);
  }
  return out;
}

void Model::train(bool on) {
  if (native_) {
    native_->train(on);
  } else if (eager_) {
    eager_->train(on);
  } else {
    script_->train(on);
  }
}

namespace {

// A batch-norm layer is frozen when it has parameters and all of them are frozen.
bool batchnorm_frozen(const std::string& prefix, const std::vector<std::string>& param_names,
                      const std::function<bool(const std::string&)>& is_frozen) {
  if (param_names.empty()) return false;
  for (const auto& local : param_names) {
    if (!is_frozen(prefix.empty() ? local : prefix + "." + local)) return false;
  }
  return true;
}

}  // namespace

void Model::keep_frozen_batchnorm_in_eval(const std::function<bool(const std::string&)>& is_frozen) {
  if (eager_) return eager_->keep_frozen_batchnorm_in_eval(is_frozen);
  if (native_) {
    for (const auto& item : native_->named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
      if (item.value()->name().find("BatchNorm") == std::string::npos) continue;
      std::vector<std::string> names;
      for (const auto& p : item.value()->named_parameters(/*recurse=*/false)) names.push_back(p.key());
      if (batchnorm_frozen(item.key(), names, is_frozen)) item.value()->eval();
    }
    return;
  }
  for (const auto& item : script_->named_modules()) {
    const auto type = item.value.type()->name();
    if (!type || type->qualifiedName().find("BatchNorm") == std::string::npos) continue;
    std::vector<std::string> names;
    for (const auto& p : item.value.named_parameters(/*recurse=*/false)) names.push_back(p.name);
    if (batchnorm_frozen(item.name, names, is_frozen)) {
      auto module = item.value;
      module.train(false);
    }
  }
}

bool Model::is_training() const {
  return native_ ? native_->is_training() : eager_ ? eager_->is_training() : script_->is_training();
}

void Model::to(const at::Device& device) {
  if (native_) {
    native_->to(device);
  } else if (eager_) {
    eager_->to(device);
  } else {
    script_->to(device);
  }
}

}  // namespace finetune
