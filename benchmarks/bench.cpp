// finetune_bench: training throughput of the built-in native models in the C++ loop (no Python anywhere).
//
//   finetune_bench [--threads N] [--steps N]
// Prints steps/s and samples/s for the MLP (64-128-10) and the CNN (1x28x28) at a few batch sizes, on
// random data, median of 3 repeats after a warm-up.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "dataset.h"
#include "models.h"
#include "train.h"

using namespace finetune;

namespace {

struct Case {
  std::string model;
  int64_t batch_size;
  std::function<std::shared_ptr<NativeModule>()> make;
  std::vector<int64_t> input_shape;  // one example
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Steps per second of `steps` SGD steps through finetune::train.
double steps_per_second(const Case& c, int64_t steps) {
  const int64_t n = c.batch_size * steps;
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), c.input_shape.begin(), c.input_shape.end());
  const Dataset data({at::randn(shape)}, at::randint(10, {n}, at::kLong));
  TrainConfig config;
  config.epochs = 1;
  config.batch_size = c.batch_size;
  Model model(c.make());
  const auto result = train(model, data, nullptr, config);
  return static_cast<double>(result.steps) / result.history.back().seconds;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t threads = 1, steps = 300;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::atoll(argv[i + 1]);
    else if (flag == "--steps") steps = std::atoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: finetune_bench [--threads N] [--steps N]\n");
      return 2;
    }
  }
  at::set_num_threads(static_cast<int>(threads));
  at::manual_seed(0);

  const auto mlp = [] {
    MlpOptions o;
    o.in_features = 64;
    o.hidden = {128};
    o.num_classes = 10;
    return make_mlp(o);
  };
  const auto cnn = [] { return make_cnn(CnnOptions{}); };
  const std::vector<Case> cases = {
      {"mlp 64-128-10", 1, mlp, {64}},  {"mlp 64-128-10", 32, mlp, {64}},   {"mlp 64-128-10", 256, mlp, {64}},
      {"cnn 1x28x28", 1, cnn, {1, 28, 28}}, {"cnn 1x28x28", 64, cnn, {1, 28, 28}},
  };
  std::printf("threads %lld, median of 3 runs\n%-16s %6s %12s %14s\n", static_cast<long long>(threads), "model",
              "batch", "steps/s", "samples/s");
  for (const auto& c : cases) {
    const int64_t case_steps = c.model.rfind("cnn", 0) == 0 ? std::max<int64_t>(steps / 10, 10) : steps;
    steps_per_second(c, std::max<int64_t>(case_steps / 10, 5));  // warm-up
    std::vector<double> runs;
    for (int r = 0; r < 3; ++r) runs.push_back(steps_per_second(c, case_steps));
    const double rate = median(runs);
    std::printf("%-16s %6lld %12.1f %14.1f\n", c.model.c_str(), static_cast<long long>(c.batch_size), rate,
                rate * static_cast<double>(c.batch_size));
  }
  return 0;
}
