// The article's example, working: fine-tune a pretrained image classifier, then report test accuracy.
//
// Story: a CNN is first trained on the classes 0-4 of an IDX image set (Fashion-MNIST by default) — the
// "pretrained" model, which has never seen classes 5-9. It is then fine-tuned on a stratified sample of the
// full 10-class training set, and its held-out test accuracy is printed before and after, beside the same CNN
// trained from scratch on the same sample. By default both run the recipe (recipe.h: head first, then every
// layer, range-tested rates, early stopping on a validation slice of the sample, and fresh weights as a last
// candidate, kept only if clearly better on the slice); `--recipe none` runs the
// article's plain SGD for `--epochs` epochs instead.
//
//   finetune_example [--data DIR] [--fraction 0.1] [--recipe auto|none] [--epochs 3] [--pretrain-epochs 2]
//                    [--fine-tune-optimizer sgd|adamw] [--limit N] [--seed N] [--threads N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <type_traits>

#include "dataset.h"
#include "idx.h"
#include "models.h"
#include "evaluate.h"
#include "recipe.h"
#include "train.h"

using namespace finetune;

namespace {

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist";
  double fraction = 0.1;
  std::string recipe = "auto";
  std::string fine_tune_optimizer;  // --recipe auto: rule 4's SGD ("sgd", when not given) or the rule before it
  int64_t epochs = -1;  // --recipe none: the plain run's epochs (3 when not given)
  int64_t pretrain_epochs = 2;
  int64_t limit = 0;  // use only the first N training and test images (0 = all)
  int64_t seed = 0;   // initial weights, sample, orders: the same seed prints the same figures
  int64_t threads = 0;
};

// The whole of `value` as a number, or exit 2 naming the option and the value (std::stod alone accepts "0.1x"
// and throws a bare "stod" on "x").
template <typename T>
T number(const std::string& flag, const std::string& value) {
  size_t used = 0;
  T parsed{};
  try {
    if constexpr (std::is_floating_point_v<T>) parsed = std::stod(value, &used);
    else parsed = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size()) {
    std::fprintf(stderr, "error: %s needs a number, got %s\n", flag.c_str(), value.c_str());
    std::exit(2);
  }
  return parsed;
}

Args parse_args(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::puts("usage: finetune_example [--data DIR] [--fraction F] [--recipe auto|none] [--epochs N] "
                "[--pretrain-epochs N] [--fine-tune-optimizer sgd|adamw] [--limit N] [--seed N] [--threads N]");
      std::exit(0);
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "error: %s needs a value\n", flag.c_str());
      std::exit(2);
    }
    const std::string value = argv[++i];
    if (flag == "--data") args.data = value;
    else if (flag == "--fraction") args.fraction = number<double>(flag, value);
    else if (flag == "--recipe") args.recipe = value;
    else if (flag == "--fine-tune-optimizer") args.fine_tune_optimizer = value;
    else if (flag == "--epochs") args.epochs = number<int64_t>(flag, value);
    else if (flag == "--pretrain-epochs") args.pretrain_epochs = number<int64_t>(flag, value);
    else if (flag == "--limit") args.limit = number<int64_t>(flag, value);
    else if (flag == "--seed") args.seed = number<int64_t>(flag, value);
    else if (flag == "--threads") args.threads = number<int64_t>(flag, value);
    else {
      std::fprintf(stderr, "error: unknown option %s\n", flag.c_str());
      std::exit(2);
    }
  }
  if (args.recipe != "auto" && args.recipe != "none") {
    std::fprintf(stderr, "error: --recipe must be auto or none, got %s\n", args.recipe.c_str());
    std::exit(2);
  }
  if (args.recipe == "auto" && args.epochs != -1) {  // a setting given takes effect or is an error
    std::fprintf(stderr, "error: --epochs %lld sets the plain SGD run's epochs: pass --recipe none with it (the "
                 "recipe decides its epochs by early stopping)\n", static_cast<long long>(args.epochs));
    std::exit(2);
  }
  if (args.epochs == -1) args.epochs = 3;
  if (!args.fine_tune_optimizer.empty() && args.recipe != "auto") {
    std::fprintf(stderr, "error: --fine-tune-optimizer %s chooses the recipe's optimizer: --recipe none runs the "
                 "article's plain SGD\n", args.fine_tune_optimizer.c_str());
    std::exit(2);
  }
  if (args.fine_tune_optimizer.empty()) args.fine_tune_optimizer = "sgd";
  if (args.fine_tune_optimizer != "sgd" && args.fine_tune_optimizer != "adamw") {
    std::fprintf(stderr, "error: --fine-tune-optimizer must be sgd or adamw, got %s\n",
                 args.fine_tune_optimizer.c_str());
    std::exit(2);
  }
  // Checked before the pretraining starts, so a bad value costs no minutes.
  const auto at_least = [](const char* flag, int64_t value, int64_t low) {
    if (value < low) {
      std::fprintf(stderr, "error: %s must be >= %lld, got %lld\n", flag, static_cast<long long>(low),
                   static_cast<long long>(value));
      std::exit(2);
    }
  };
  at_least("--epochs", args.epochs, 1);
  at_least("--pretrain-epochs", args.pretrain_epochs, 1);
  at_least("--limit", args.limit, 0);
  at_least("--seed", args.seed, 0);
  at_least("--threads", args.threads, 0);
  if (!(args.fraction > 0.0 && args.fraction <= 1.0)) {
    std::fprintf(stderr, "error: --fraction must be in (0, 1], got %g\n", args.fraction);
    std::exit(2);
  }
  return args;
}

// Images as float (N, 1, H, W), scaled to [0, 1] then standardised with the training set's statistics.
Dataset load_split(const std::string& dir, const std::string& prefix, int64_t limit) {
  auto images = read_idx(dir + "/" + prefix + "-images-idx3-ubyte.gz");
  auto labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte.gz").to(at::kLong);
  if (limit > 0) {
    images = images.slice(0, 0, limit);
    labels = labels.slice(0, 0, limit);
  }
  return Dataset({images.to(at::kFloat).div_(255.0).unsqueeze(1)}, labels);
}

double accuracy(Model& model, const Dataset& data, const TrainConfig& config) {
  return evaluate(model, data, config).values.at("accuracy");
}

}  // namespace

int main(int argc, char** argv) try {
  const Args args = parse_args(argc, argv);
  if (args.threads > 0) at::set_num_threads(static_cast<int>(args.threads));

  auto train_set = load_split(args.data, "train", args.limit);
  auto test_set = load_split(args.data, "t10k", args.limit);
  const auto mean = train_set.inputs[0].mean(), stddev = train_set.inputs[0].std();
  train_set.inputs[0].sub_(mean).div_(stddev);
  test_set.inputs[0].sub_(mean).div_(stddev);
  std::cout << "data: " << args.data << " (" << train_set.size() << " train, " << test_set.size() << " test images)\n";

  CnnOptions cnn;
  cnn.height = train_set.inputs[0].size(2);
  cnn.width = train_set.inputs[0].size(3);
  cnn.num_classes = 10;

  TrainConfig config;
  config.seed = args.seed;
  config.optimizer = "sgd";
  config.lr = 0.01;
  config.momentum = 0.9;
  config.batch_size = 64;

  // 1. "Pretrained" model: classes 0-4 only.
  const auto old_classes = (train_set.targets < 5).nonzero().flatten();
  auto old_batch = train_set.gather(old_classes);
  const Dataset pretrain_set(old_batch.inputs, old_batch.targets);
  config.epochs = args.pretrain_epochs;
  // The initial weights come from the global generator, which LibTorch seeds at random in each process: seeded
  // here, the pretrained model (and so every figure after it) is the same from one run to the next.
  at::manual_seed(static_cast<uint64_t>(args.seed));
  Model model(make_cnn(cnn));
  const auto pretrained = train(model, pretrain_set, nullptr, config);
  std::printf("pretrained on classes 0-4: %lld images, %lld epochs, %.0f samples/s\n",
              static_cast<long long>(pretrain_set.size()), static_cast<long long>(args.pretrain_epochs),
              pretrained.history.empty() ? 0.0 : pretrained.history.back().samples_per_s);
  const double before = accuracy(model, test_set, config);

  // 2. Fine-tune on a stratified sample of all ten classes: the recipe, or the article's plain SGD.
  config.sample_fraction = args.fraction;
  config.stratify = true;
  Model scratch(make_cnn(cnn));
  if (args.recipe == "auto") {
    const std::string head = "classifier.3";  // the CNN's last layer
    // Phase scratch (a last candidate) draws the same CNN with fresh weights from this. The recipe seeds the draw
    // from config.seed, --seed as the pretrained CNN's was: fresh weights are the ones pretraining started from.
    const auto fresh = [&cnn] { return Model(make_cnn(cnn)); };
    const auto tuned = recipe::run(model, train_set, config, /*pretrained=*/true, head,
                                   /*fine_tune_sgd=*/args.fine_tune_optimizer == "sgd", fresh);
    std::printf("fine-tuned with the recipe on %lld sampled images (a validation slice of them held out for its "
                "decisions):\n", static_cast<long long>(tuned.sample.size(0)));
    for (const auto& d : tuned.decisions) {
      std::printf("  %-14s %s  (%s)\n", d.what.c_str(), d.value.c_str(), d.reason.c_str());
    }
    // 3. The same CNN from scratch on the same sample, with the recipe's rules for random weights.
    const auto alone = recipe::run(scratch, train_set, config, /*pretrained=*/false, head);
    std::printf("from scratch with the recipe:");
    for (const auto& d : alone.decisions) {
      if (d.what == "full.lr" || d.what == "full.result") std::printf("  %s %s", d.what.c_str(), d.value.c_str());
    }
    std::printf("\n");
  } else {
    config.epochs = args.epochs;
    const auto tuned = train(model, train_set, &test_set, config);
    std::printf("fine-tuned with SGD (lr %.3g, momentum %.2g, batch %lld) on %lld sampled images, class counts:",
                config.lr, config.momentum, static_cast<long long>(config.batch_size),
                static_cast<long long>(tuned.train_size));
    for (const auto count : tuned.class_counts) std::printf(" %lld", static_cast<long long>(count));
    std::printf("\n");
    for (const auto& epoch : tuned.history) {
      std::printf("  epoch %lld  train loss %.4f  test loss %.4f  test accuracy %.4f  %.0f samples/s\n",
                  static_cast<long long>(epoch.epoch + 1), epoch.train_loss, epoch.val.at("loss"),
                  epoch.val.at("accuracy"), epoch.samples_per_s);
    }
    // 3. The same CNN from scratch on the same sample, for comparison.
    train(scratch, train_set, nullptr, config);
  }
  const double after = accuracy(model, test_set, config);
  const double from_scratch = accuracy(scratch, test_set, config);

  std::printf("test accuracy (10 classes): before fine-tuning %.4f, after %.4f, from scratch on the same sample %.4f\n",
              before, after, from_scratch);
  return 0;
} catch (const c10::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
