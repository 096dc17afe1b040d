// finetune._C: the only file that includes pybind11. Converts between Python and the core, releases the
// GIL around the loop, and turns C++ errors into Python exceptions.
#include <torch/extension.h>

#include <chrono>

#include "config.h"
#include "augment.h"
#include "best.h"
#include "dataset.h"
#include "idx.h"
#include "sampling.h"
#include "distributed.h"
#include "models.h"
#include "optim.h"
#include "padding.h"
#include "patterns.h"
#include "probe.h"
#include "ranking.h"
#include "recipe.h"
#include "schedule.h"
#include "evaluate.h"
#include "forward.h"
#include "lr_finder.h"
#include "train.h"

namespace py = pybind11;
using namespace finetune;

namespace {

// Ctrl-C (or SIGTERM's handler) while a Python forward ran: carried through the loop as it is and raised again
// in Python by the translator registered in the module below.
class PythonInterrupt final : public ForwardInterrupted {
 public:
  explicit PythonInterrupt(py::error_already_set error) : ForwardInterrupted(error.what()), error_(std::move(error)) {}
  void restore() { error_.restore(); }

 private:
  py::error_already_set error_;
};

// Called from a catch of an error raised in Python while the loop called into it: Ctrl-C or SystemExit becomes a
// PythonInterrupt (the loop saves its "interrupt" checkpoint), anything else goes on as it is.
[[noreturn]] void rethrow_python_error(py::error_already_set& error) {
  if (error.matches(PyExc_KeyboardInterrupt) || error.matches(PyExc_SystemExit)) throw PythonInterrupt(std::move(error));
  throw;
}

// A Python nn.Module run eagerly (runner="python"), through finetune.models.EagerRunner: the loop stays here and
// runs without the GIL; each call into the module takes it for that call alone.
class PythonModule final : public EagerModule {
 public:
  explicit PythonModule(py::object runner) : runner_(std::move(runner)) {}
  ~PythonModule() override {
    py::gil_scoped_acquire gil;  // the last reference may go where the loop released the GIL
    runner_ = py::object();
  }
  at::Tensor forward(const std::vector<at::Tensor>& inputs) override {
    py::gil_scoped_acquire gil;
    try {
      return runner_.attr("forward")(inputs).cast<at::Tensor>();
    } catch (py::error_already_set& error) {
      rethrow_python_error(error);
    }
  }
  NamedTensors named_parameters() const override { return named("named_parameters"); }
  NamedTensors named_buffers() const override { return named("named_buffers"); }
  void train(bool on) override {
    py::gil_scoped_acquire gil;
    try {
      runner_.attr("train")(on);
    } catch (py::error_already_set& error) {
      // Called when a run ends, an error unwinding or not: Ctrl-C here is handed back to Python (the signal
      // raised again at its next check) rather than thrown from where nothing may throw.
      if (!error.matches(PyExc_KeyboardInterrupt)) throw;
      PyErr_SetInterrupt();
    }
  }
  bool is_training() const override {
    py::gil_scoped_acquire gil;
    return runner_.attr("training").cast<bool>();
  }
  void keep_frozen_batchnorm_in_eval(const std::function<bool(const std::string&)>& is_frozen) override {
    py::gil_scoped_acquire gil;
    runner_.attr("keep_frozen_batchnorm_in_eval")(py::cpp_function(is_frozen));
  }
  void to(const at::Device& device) override {
    py::gil_scoped_acquire gil;
    runner_.attr("to")(device.str());
  }

 private:
  NamedTensors named(const char* method) const {
    py::gil_scoped_acquire gil;
    return runner_.attr(method)().cast<NamedTensors>();
  }
  py::object runner_;
};

// A streamed dataset's examples (finetune.streams.Stream): fetched in Python, its DataLoader workers reading the
// planned batches ahead. Like a Python forward, each call takes the GIL for that call alone.
class PythonSource final : public ExampleSource {
 public:
  explicit PythonSource(py::object stream) : stream_(std::move(stream)) {}
  ~PythonSource() override {
    py::gil_scoped_acquire gil;
    stream_ = py::object();
  }
  std::vector<at::Tensor> fetch(const at::Tensor& indices) override {
    py::gil_scoped_acquire gil;
    try {
      return stream_.attr("fetch")(indices).cast<std::vector<at::Tensor>>();
    } catch (py::error_already_set& error) {  // Ctrl-C while waiting for a worker: as in a Python forward
      rethrow_python_error(error);
    }
  }
  void plan(const std::vector<at::Tensor>& batches, int64_t epoch) override {
    py::gil_scoped_acquire gil;
    stream_.attr("plan")(batches, epoch);
  }

 private:
  py::object stream_;
};

// Inputs as finetune passes them: a list of tensors in memory, or a finetune.streams.Stream.
Dataset dataset_of(const py::object& inputs, const at::Tensor& targets, int64_t mask_input) {
  if (py::hasattr(inputs, "fetch")) return Dataset(std::make_shared<PythonSource>(inputs), targets, mask_input);
  return Dataset(inputs.cast<std::vector<at::Tensor>>(), targets, mask_input);
}

Model as_model(const py::object& model) {
  if (py::isinstance<NativeModule>(model)) return Model(model.cast<std::shared_ptr<NativeModule>>());
  if (py::isinstance<torch::jit::Module>(model)) return Model(model.cast<torch::jit::Module>());  // scripted._c
  return Model(std::make_shared<PythonModule>(model));  // finetune.models.EagerRunner
}

py::dict metrics_dict(const Metrics& metrics) {
  py::dict out;
  for (const auto& [name, value] : metrics.values) out[py::str(name)] = value;
  return out;
}

// A history entry as a flat dict: the epoch's fields and "val_<metric>" for each validation metric (what the
// epoch callback receives, Result.history holds and a checkpoint's state.json keeps).
py::dict epoch_dict(const EpochRecord& r) {
  py::dict out;
#define FINETUNE_TO_DICT(type, name, default_value) out[#name] = r.name;
  FINETUNE_EPOCH_FIELDS(FINETUNE_TO_DICT)
#undef FINETUNE_TO_DICT
  for (const auto& [name, value] : r.val) out[py::str("val_" + name)] = value;
  return out;
}

EpochRecord epoch_record(const py::dict& d) {
  EpochRecord r;
#define FINETUNE_FROM_DICT(type, name, default_value) if (d.contains(#name)) r.name = d[#name].cast<type>();
  FINETUNE_EPOCH_FIELDS(FINETUNE_FROM_DICT)
#undef FINETUNE_FROM_DICT
  for (const auto& [key_obj, value] : d) {
    const auto key = key_obj.cast<std::string>();
    if (key.rfind("val_", 0) == 0) r.val[key.substr(4)] = value.cast<double>();
  }
  return r;
}

// The counters as a dict and back (a checkpoint's state.json "counters"), from the one list in train.h.
py::dict counters_dict(const LoopState& s) {
  py::dict out;
#define FINETUNE_TO_DICT(type, name, default_value) out[#name] = s.name;
  FINETUNE_LOOP_COUNTERS(FINETUNE_TO_DICT)
#undef FINETUNE_TO_DICT
  return out;
}

void set_counters(LoopState& s, const py::dict& d) {
#define FINETUNE_FROM_DICT(type, name, default_value) s.name = d[#name].cast<type>();
  FINETUNE_LOOP_COUNTERS(FINETUNE_FROM_DICT)
#undef FINETUNE_FROM_DICT
}

std::vector<std::string> counter_names() {
  return {
#define FINETUNE_NAME(type, name, default_value) #name,
      FINETUNE_LOOP_COUNTERS(FINETUNE_NAME)
#undef FINETUNE_NAME
  };
}

using Clock = std::chrono::steady_clock;

// How often the loop looks for Ctrl-C (and SIGTERM) whatever the callback's interval: it takes the GIL
// for a moment, so not after every step of a fast model.
constexpr double kSignalInterval = 0.2;

// Throws error_already_set when a signal handler raised (KeyboardInterrupt), at most every kSignalInterval s.
class SignalPoll {
 public:
  bool due() const { return std::chrono::duration<double>(Clock::now() - last_).count() >= kSignalInterval; }
  void operator()() {
    if (!due()) return;
    py::gil_scoped_acquire gil;
    check();
  }
  void check() {  // with the GIL held
    last_ = Clock::now();
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }

 private:
  Clock::time_point last_ = Clock::now();
};

// Turns the Python callback into loop hooks. The GIL is taken only when Python is called, at most every
// `interval_s` seconds and at the end of each epoch, and every kSignalInterval seconds to notice Ctrl-C.
TrainHooks python_hooks(const py::object& callback, double interval_s, const py::object& checkpoint) {
  auto last_call = std::make_shared<std::optional<Clock::time_point>>();
  auto signals = std::make_shared<SignalPoll>();
  TrainHooks hooks;
  hooks.poll = [signals] { (*signals)(); };
  hooks.on_step = [callback, interval_s, last_call, signals](const StepInfo& info) {
    const auto now = Clock::now();
    const bool due = !last_call->has_value() || info.epoch_step == info.steps_per_epoch ||
                     std::chrono::duration<double>(now - **last_call).count() >= interval_s;
    if (!due && !signals->due()) return false;
    py::gil_scoped_acquire gil;
    signals->check();
    if (!due) return false;
    *last_call = now;
    if (callback.is_none()) return false;
    py::dict d;
    d["epoch"] = info.epoch;
    d["step"] = info.step;
    d["epoch_step"] = info.epoch_step;
    d["steps_per_epoch"] = info.steps_per_epoch;
    d["samples"] = info.samples;
    d["loss"] = info.loss;
    d["lr"] = info.lr;
    d["epoch_seconds"] = info.epoch_seconds;
    return py::bool_(callback("step", d)).cast<bool>();
  };
  hooks.on_epoch_end = [callback](const EpochRecord& record) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    return !callback.is_none() && py::bool_(callback("epoch", epoch_dict(record))).cast<bool>();
  };
  if (!checkpoint.is_none()) {
    hooks.on_checkpoint = [checkpoint](const LoopState& state, const std::string& reason) {
      py::gil_scoped_acquire gil;
      checkpoint(reason, state);  // a copy, as the bound LoopState
    };
  }
  return hooks;
}

// The C++ side of a c10d process group made in Python (finetune/distributed.py), or null without one.
std::shared_ptr<Parallel> parallel_over(const py::object& process_group, const TrainConfig& config) {
  if (process_group.is_none()) return nullptr;
  return std::make_shared<ProcessGroupParallel>(process_group.cast<c10::intrusive_ptr<c10d::ProcessGroup>>(),
                                                config.bucket_mb, resolve_device(config.device));
}

TrainResult train_py(const py::object& model_obj, const py::object& train_inputs, const at::Tensor& train_targets,
                     const py::object& val_inputs, const std::optional<at::Tensor>& val_targets,
                     const TrainConfig& config, const py::object& callback, double callback_interval_s,
                     const py::object& checkpoint, const std::optional<LoopState>& resume,
                     const py::object& process_group, int64_t mask_input) {
  auto model = as_model(model_obj);
  const auto train_data = dataset_of(train_inputs, train_targets, mask_input);
  std::optional<Dataset> val_data;
  if (!val_inputs.is_none() && val_targets) val_data.emplace(dataset_of(val_inputs, *val_targets, mask_input));
  auto hooks = python_hooks(callback, callback_interval_s, checkpoint);
  hooks.parallel = parallel_over(process_group, config);
  TrainResult result;
  {
    py::gil_scoped_release no_gil;
    result = train(model, train_data, val_data ? &*val_data : nullptr, config, hooks, resume ? &*resume : nullptr);
  }
  return result;
}

py::dict find_lr_py(const py::object& model_obj, const py::object& inputs, const at::Tensor& targets,
                    const TrainConfig& config, double start_lr, double end_lr, int64_t num_steps,
                    double diverge_factor, int64_t mask_input) {
  auto model = as_model(model_obj);
  const auto data = dataset_of(inputs, targets, mask_input);
  LrFinderResult result;
  {
    py::gil_scoped_release no_gil;
    result = find_lr(model, data, config, start_lr, end_lr, num_steps, diverge_factor);
  }
  py::dict out;
  out["lrs"] = result.lrs;
  out["losses"] = result.losses;
  out["suggestion"] = result.suggestion;
  out["diverged"] = result.diverged;
  return out;
}

py::tuple fit_probe_py(const at::Tensor& features, const at::Tensor& targets, const at::Tensor& members,
                       int64_t classes, double strength, const std::optional<at::Tensor>& class_weights,
                       double label_smoothing, const std::optional<at::Tensor>& start_weight,
                       const std::optional<at::Tensor>& start_bias, int64_t max_iterations, double tolerance) {
  ProbeFit fit;
  {
    py::gil_scoped_release no_gil;
    fit = fit_probe(features, targets, members, classes, strength, class_weights, label_smoothing, start_weight,
                    start_bias, max_iterations, tolerance);
  }
  return py::make_tuple(fit.weight, fit.bias, fit.iterations);
}

py::dict evaluate_py(const py::object& model_obj, const py::object& inputs, const at::Tensor& targets,
                     const TrainConfig& config, const py::object& process_group, int64_t mask_input) {
  auto model = as_model(model_obj);
  const auto data = dataset_of(inputs, targets, mask_input);
  const auto parallel = parallel_over(process_group, config);
  SignalPoll signals;
  Metrics metrics;
  {
    py::gil_scoped_release no_gil;
    metrics = evaluate(model, data, config, parallel.get(), [&signals] { signals(); });
  }
  auto out = metrics_dict(metrics);
  if (metrics.confusion.defined()) {
    out["confusion_matrix"] = metrics.confusion;
    out["per_class_precision"] = metrics.precision;
    out["per_class_recall"] = metrics.recall;
  }
  return out;
}

at::Tensor predict_py(const py::object& model_obj, const py::object& inputs, const TrainConfig& config,
                      int64_t mask_input) {
  auto model = as_model(model_obj);
  SignalPoll signals;
  if (py::hasattr(inputs, "fetch")) {  // a stream: its length, and targets nothing reads
    const int64_t n = py::len(inputs);
    const auto data = dataset_of(inputs, at::zeros({n}), mask_input);
    py::gil_scoped_release no_gil;
    return predict(model, data, 0, n, config, [&signals] { signals(); });
  }
  const auto tensors = inputs.cast<std::vector<at::Tensor>>();
  py::gil_scoped_release no_gil;
  return predict(model, tensors, config, [&signals] { signals(); }, mask_input);
}

py::list named_tensors(const NamedTensors& tensors) {
  py::list out;
  for (const auto& [name, tensor] : tensors) out.append(py::make_tuple(name, tensor));
  return out;
}

// The loop's records, field for field through their X-macros (train.h): an epoch, the loop's state (what a
// checkpoint holds; its tensors by name as (name, tensor) pairs), a parameter group, the metrics and a run's result.
void bind_records(py::module_& m) {
  py::class_<EpochRecord> epoch(m, "EpochRecord");
  epoch.def(py::init<>()).def_readwrite("val", &EpochRecord::val);
#define FINETUNE_BIND_FIELD(type, name, default_value) epoch.def_readwrite(#name, &EpochRecord::name);
  FINETUNE_EPOCH_FIELDS(FINETUNE_BIND_FIELD)
#undef FINETUNE_BIND_FIELD
  epoch.def("as_dict", &epoch_dict).def_static("from_dict", &epoch_record, py::arg("entry"));

  py::class_<LoopState> state(m, "LoopState");
  state.def(py::init<>())
      .def_readwrite("history", &LoopState::history)
      .def_readwrite("best_metrics", &LoopState::best_metrics)
      .def_readwrite("optimizer", &LoopState::optimizer)
      .def_readwrite("ema", &LoopState::ema)
      .def_readwrite("best", &LoopState::best)
      .def_property(  // None where the run has no generator state to restore
          "rng_state", [](const LoopState& s) { return s.rng_state.defined() ? py::cast(s.rng_state) : py::none(); },
          [](LoopState& s, const std::optional<at::Tensor>& t) { s.rng_state = t ? *t : at::Tensor(); })
      .def("counters", &counters_dict)
      .def("set_counters", &set_counters, py::arg("counters"))
      .def_static("counter_names", &counter_names);
#define FINETUNE_BIND_FIELD(type, name, default_value) state.def_readwrite(#name, &LoopState::name);
  FINETUNE_LOOP_COUNTERS(FINETUNE_BIND_FIELD)
#undef FINETUNE_BIND_FIELD

  py::class_<ParamGroupReport>(m, "ParamGroupReport")
      .def_readonly("names", &ParamGroupReport::names)
      .def_readonly("lr", &ParamGroupReport::lr)
      .def_readonly("weight_decay", &ParamGroupReport::weight_decay)
      .def_readonly("from_epoch", &ParamGroupReport::from_epoch);
  py::class_<Metrics>(m, "Metrics")
      .def_readonly("values", &Metrics::values)
      .def_property_readonly("confusion", [](const Metrics& x) {
        return x.confusion.defined() ? py::cast(x.confusion) : py::none();
      })
      .def_readonly("precision", &Metrics::precision)
      .def_readonly("recall", &Metrics::recall);

  py::class_<TrainResult> result(m, "TrainResult");
  result.def_readonly("history", &TrainResult::history)
      .def_readonly("metrics", &TrainResult::metrics)
      .def_readonly("param_groups", &TrainResult::param_groups);
#define FINETUNE_BIND_FIELD(type, name, default_value) result.def_readonly(#name, &TrainResult::name);
  FINETUNE_RESULT_FIELDS(FINETUNE_BIND_FIELD)
#undef FINETUNE_BIND_FIELD
}

// TrainConfig, field for field through its X-macro.
void bind_config(py::module_& m) {
  py::class_<TrainConfig> config(m, "TrainConfig");
  config.def(py::init<>());
#define FINETUNE_BIND_FIELD(type, name, default_value) config.def_readwrite(#name, &TrainConfig::name);
  FINETUNE_CONFIG_FIELDS(FINETUNE_BIND_FIELD)
#undef FINETUNE_BIND_FIELD
  config.def_static("field_names", &config_field_names);
  config.def("validate", [](const TrainConfig& c) { validate(c); });
}

// The built-in models' option structs and factories, and the native module type.
void bind_models(py::module_& m) {
  py::class_<MlpOptions>(m, "MlpOptions")
      .def(py::init<>())
      .def_readwrite("in_features", &MlpOptions::in_features)
      .def_readwrite("hidden", &MlpOptions::hidden)
      .def_readwrite("num_classes", &MlpOptions::num_classes)
      .def_readwrite("dropout", &MlpOptions::dropout)
      .def_readwrite("center", &MlpOptions::center)
      .def_readwrite("scale", &MlpOptions::scale)
      .def_readwrite("clip", &MlpOptions::clip)
      .def_readwrite("target_center", &MlpOptions::target_center)
      .def_readwrite("target_scale", &MlpOptions::target_scale)
      .def_readwrite("linear", &MlpOptions::linear)
      .def_readwrite("linear_center", &MlpOptions::linear_center)
      .def_readwrite("linear_scale", &MlpOptions::linear_scale)
      .def_readwrite("embedding", &MlpOptions::embedding)
      .def_readwrite("embedding_frequencies", &MlpOptions::embedding_frequencies)
      .def_readwrite("embedding_size", &MlpOptions::embedding_size)
      .def_readwrite("embedding_sigma", &MlpOptions::embedding_sigma)
      .def_readwrite("indicator_columns", &MlpOptions::indicator_columns)
      .def_readwrite("indicator_values", &MlpOptions::indicator_values)
      .def_readwrite("missing_columns", &MlpOptions::missing_columns);
  py::class_<CnnOptions>(m, "CnnOptions")
      .def(py::init<>())
      .def_readwrite("in_channels", &CnnOptions::in_channels)
      .def_readwrite("height", &CnnOptions::height)
      .def_readwrite("width", &CnnOptions::width)
      .def_readwrite("channels", &CnnOptions::channels)
      .def_readwrite("hidden", &CnnOptions::hidden)
      .def_readwrite("num_classes", &CnnOptions::num_classes)
      .def_readwrite("dropout", &CnnOptions::dropout);

  py::class_<MfOptions>(m, "MfOptions")
      .def(py::init<>())
      .def_readwrite("num_users", &MfOptions::num_users)
      .def_readwrite("num_items", &MfOptions::num_items)
      .def_readwrite("dim", &MfOptions::dim)
      .def_readwrite("mean", &MfOptions::mean)
      .def_readwrite("scale", &MfOptions::scale)
      .def_readwrite("reg", &MfOptions::reg);
  py::class_<NcfOptions>(m, "NcfOptions")
      .def(py::init<>())
      .def_readwrite("num_users", &NcfOptions::num_users)
      .def_readwrite("num_items", &NcfOptions::num_items)
      .def_readwrite("dim", &NcfOptions::dim)
      .def_readwrite("hidden", &NcfOptions::hidden)
      .def_readwrite("dropout", &NcfOptions::dropout)
      .def_readwrite("mean", &NcfOptions::mean);

  py::class_<NativeModule, std::shared_ptr<NativeModule>>(m, "NativeModule")
      .def("forward", [](NativeModule& self, const std::vector<at::Tensor>& inputs) { return self.forward(inputs); })
      .def("features", [](NativeModule& self, const std::vector<at::Tensor>& inputs) { return self.features(inputs); })
      .def("named_parameters",
           [](const std::shared_ptr<NativeModule>& self) { return named_tensors(Model(self).named_parameters()); })
      .def("named_buffers",
           [](const std::shared_ptr<NativeModule>& self) { return named_tensors(Model(self).named_buffers()); })
      .def("train", [](NativeModule& self, bool on) { self.train(on); }, py::arg("mode") = true)
      .def_property_readonly("training", [](const NativeModule& self) { return self.is_training(); })
      .def("to", [](NativeModule& self, const std::string& device) { self.to(resolve_device(device)); })
      .def("__repr__", [](const NativeModule& self) {
        std::ostringstream s;
        self.pretty_print(s);
        return s.str();
      });
  m.def("make_mlp", &make_mlp);
  m.def("make_cnn", &make_cnn);
  m.def("make_mf", &make_mf);
  m.def("make_ncf", &make_ncf);
}

// The loop, evaluation and the pieces tests compare with PyTorch (schedules, sampling, augmentation).
void bind_loop(py::module_& m) {
  m.def("train", &train_py, py::arg("model"), py::arg("train_inputs"), py::arg("train_targets"),
        py::arg("val_inputs"), py::arg("val_targets"), py::arg("config"), py::arg("callback") = py::none(),
        py::arg("callback_interval_s") = 0.1, py::arg("checkpoint") = py::none(), py::arg("resume") = py::none(),
        py::arg("process_group") = py::none(), py::arg("mask_input") = -1);
  m.def("find_lr", &find_lr_py, py::arg("model"), py::arg("inputs"), py::arg("targets"), py::arg("config"),
        py::arg("start_lr"), py::arg("end_lr"), py::arg("num_steps"), py::arg("diverge_factor"),
        py::arg("mask_input") = -1);
  m.def("fit_probe", &fit_probe_py, py::arg("features"), py::arg("targets"), py::arg("members"), py::arg("classes"),
        py::arg("strength"), py::arg("class_weights"), py::arg("label_smoothing"), py::arg("start_weight"),
        py::arg("start_bias"), py::arg("max_iterations"), py::arg("tolerance"));
  m.def("scheduled_lr", &scheduled_lr, py::arg("config"), py::arg("base_lr"), py::arg("step"), py::arg("total_steps"),
        py::arg("steps_per_epoch"));
  m.def("scheduled_momentum", &scheduled_momentum, py::arg("config"), py::arg("step"), py::arg("total_steps"));
  m.def("schedule_names", &schedule_names);
  m.def("lower_is_better", &lower_is_better, py::arg("monitor"));
  m.def("evaluate", &evaluate_py, py::arg("model"), py::arg("inputs"), py::arg("targets"), py::arg("config"),
        py::arg("process_group") = py::none(), py::arg("mask_input") = -1);
  m.def("predict", &predict_py, py::arg("model"), py::arg("inputs"), py::arg("config"), py::arg("mask_input") = -1);
  m.def("sequence_lengths", &sequence_lengths, py::arg("mask"));
  m.def("group_by_length", &group_by_length, py::arg("order"), py::arg("lengths"), py::arg("step_examples"));
  m.def("trim_to_longest", &trim_to_longest, py::arg("inputs"), py::arg("mask_input"));
  m.def("matches_any", [](const std::string& name, const StringList& patterns) {
    return matches_any(name, patterns, "freeze");
  }, py::arg("name"), py::arg("patterns"));

  m.def("sample_indices", &sample_indices, py::arg("targets"), py::arg("config"));
  m.def("class_counts", &class_counts, py::arg("targets"), py::arg("indices"));
  m.def("epoch_order", &epoch_order, py::arg("subset"), py::arg("seed"), py::arg("epoch"), py::arg("shuffle") = true);
  m.def("balanced_epoch_order", &balanced_epoch_order, py::arg("targets"), py::arg("subset"), py::arg("seed"),
        py::arg("epoch"));
  m.def("augment_images", &augment_images, py::arg("inputs"), py::arg("pad"), py::arg("flip"), py::arg("seed"),
        py::arg("epoch"), py::arg("step"));
  m.def("read_idx", &read_idx, py::arg("path"));
  m.def("negatives_seed", &negatives_seed, py::arg("seed"), py::arg("epoch"), py::arg("micro_batch"));
  m.def("with_negatives", &with_negatives, py::arg("pairs"), py::arg("num_items"), py::arg("seed"));
  m.def("optimizer_names", &optimizer_names);

  // The C++ recipe's pieces (recipe.h), checked against finetune/recipe.py.
  m.def("recipe_constants", [] {
    py::dict constants;
#define FINETUNE_EXPORT_CONSTANT(type, name, value) constants[#name] = recipe::name;
    FINETUNE_RECIPE_CONSTANTS(FINETUNE_EXPORT_CONSTANT)
#undef FINETUNE_EXPORT_CONSTANT
    constants["RANGE_START"] = recipe::RANGE_START, constants["RANGE_END"] = recipe::RANGE_END;
    constants["RANGE_DIVERGE"] = recipe::RANGE_DIVERGE;
    return constants;
  });
  m.def("rate_from_range", &recipe::rate_from_range, py::arg("lrs"), py::arg("losses"), py::arg("divisor"),
        py::arg("flat_tolerance"), py::arg("floor_steps"));
  m.def("recipe_split_validation", &recipe::split_validation, py::arg("targets"), py::arg("sample"),
        py::arg("classification"), py::arg("seed"), py::arg("fraction"));
  m.def("per_example_loss", &recipe::per_example_loss, py::arg("outputs"), py::arg("targets"), py::arg("task"));
  m.def("paired_gain", [](const at::Tensor& reference, const at::Tensor& candidate) {
    const auto gain = recipe::paired_gain(reference, candidate);
    py::dict out;
    out["lower_by"] = gain.lower_by, out["standard_error"] = gain.standard_error, out["z"] = gain.z;
    out["examples"] = gain.examples;
    return out;
  }, py::arg("reference"), py::arg("candidate"));

}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "finetune's compiled core: the LibTorch training loop";

  // c10's typed errors become the matching Python exceptions, without the C++ backtrace.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what_without_backtrace());
    } catch (PythonInterrupt& e) {
      e.restore();
    }
  });
  bind_config(m);
  bind_records(m);
  bind_models(m);
  bind_loop(m);
}
